// pair_style metatomic, as a plugin: see pair_metatomic_plugin.h and docs/deploy.md.
//
// How LAMMPS atoms become the model's System (the part that decides correctness):
// * Every LAMMPS atom (owned or ghost) is an image of one System atom plus an integer
//   cell shift. Owned atoms are System atoms; a ghost whose ID is owned on this rank is a
//   periodic image of that owned atom. So on one rank the System is exactly the periodic
//   cell (with `cell` and `pbc` set), whatever the ghost shell holds, and the model sees
//   no duplicated atoms.
// * With several ranks, ghosts owned elsewhere are System atoms too (one image per atom
//   ID: the one with the most neighbours, i.e. a complete neighbour list); the model
//   sums the energy of the owned atoms only (`selected_atoms`), and forces on the
//   ghost System atoms go back to their owners through LAMMPS's reverse communication
//   (newton pair on). Each rank then needs ghosts out to the model's whole interaction
//   range (num_layers x r_max for message passing), which init_style asks from Comm.
// * Pair vectors are the LAMMPS coordinates' differences (float64), registered as
//   functions of the System positions and cell (metatomic's register_autograd_neighbors);
//   positions and cell are multiplied by a strain tensor so that one backward pass gives
//   the forces (d/dpositions) and the virial (d/dstrain).
#include "pair_metatomic_plugin.h"

#include "atom.h"
#include "comm.h"
#include "domain.h"
#include "error.h"
#include "force.h"
#include "memory.h"
#include "neigh_list.h"
#include "neighbor.h"
#include "update.h"
#include "utils.h"

#include <mpi.h>

#include <cmath>
#include <cstring>
#include <fstream>
#include <limits>

#include <torch/cuda.h>
#include <torch/script.h>

#include <metatensor/torch.hpp>
#include <metatomic/torch.hpp>

using namespace LAMMPS_NS;

namespace LAMMPS_NS {
struct MetatomicModelState {
  explicit MetatomicModelState(metatensor_torch::Module m) : model(std::move(m)) {}
  metatensor_torch::Module model;
  metatomic_torch::ModelCapabilities capabilities;
  std::vector<metatomic_torch::NeighborListOptions> requests;
  std::vector<double> request_cutoffs;  // Å
  std::string energy_key = "energy";
  bool per_atom_energy = false;
  bool check_consistency = false;
  torch::Device device = torch::Device(torch::kCPU);
  torch::Dtype dtype = torch::kFloat64;
};
}  // namespace LAMMPS_NS

static const char *LENGTH_UNIT = "angstrom";
static const char *ENERGY_UNIT = "eV";

PairMetatomicPlugin::PairMetatomicPlugin(LAMMPS *lmp) : Pair(lmp)
{
  single_enable = 0;
  restartinfo = 0;
  one_coeff = 1;
  manybody_flag = 1;
  // the virial comes from the strain derivative, not from sum(x f) over owned + ghost atoms
  no_virial_fdotr_compute = 1;
}

PairMetatomicPlugin::~PairMetatomicPlugin()
{
  if (allocated) {
    memory->destroy(setflag);
    memory->destroy(cutsq);
    if (cutghost) memory->destroy(cutghost);
  }
}

void PairMetatomicPlugin::check_units() const
{
  if (strcmp(update->unit_style, "metal") != 0)
    error->all(FLERR,
               "pair_style metatomic (synthpre plugin) needs 'units metal' (eV and Angstrom); "
               "this input uses 'units {}'",
               update->unit_style);
}

void PairMetatomicPlugin::allocate()
{
  int n = atom->ntypes;
  memory->create(setflag, n + 1, n + 1, "pair:setflag");
  memory->create(cutsq, n + 1, n + 1, "pair:cutsq");
  memory->create(cutghost, n + 1, n + 1, "pair:cutghost");
  // setflag is set for all pairs: pair_coeff gives one atomic number per *type*, and
  // init_style names a type that has none (LAMMPS's own check would only say "not set")
  for (int i = 0; i <= n; i++)
    for (int j = 0; j <= n; j++) setflag[i][j] = 1;
  atomic_number_.assign(n + 1, 0);
  allocated = 1;
}

// pair_style metatomic MODEL [device D] [check_consistency on|off] [extensions DIR] [variant V]
void PairMetatomicPlugin::settings(int narg, char **arg)
{
  check_units();
  if (narg < 1)
    error->all(FLERR, "pair_style metatomic needs a model file: pair_style metatomic MODEL.pt "
                      "[device cpu|cuda] [check_consistency on|off] [extensions DIR]");
  model_path_ = arg[0];
  c10::optional<std::string> device_name, extensions, variant;
  bool check_consistency = false;
  for (int i = 1; i < narg; i += 2) {
    std::string key = arg[i];
    if (i + 1 >= narg) error->all(FLERR, "pair_style metatomic: option '{}' needs a value", key);
    std::string value = arg[i + 1];
    if (key == "device") {
      device_name = value;
    } else if (key == "check_consistency") {
      if (value != "on" && value != "off")
        error->all(FLERR, "pair_style metatomic: check_consistency must be on or off, got '{}'",
                   value);
      check_consistency = value == "on";
    } else if (key == "extensions") {
      extensions = value;
    } else if (key == "variant") {
      if (value != "off") variant = value;
    } else if (key == "uncertainty_threshold") {
      // accepted for input compatibility; this plugin does not evaluate uncertainties
    } else if (key == "non_conservative") {
      if (value != "off")
        error->all(FLERR, "pair_style metatomic (synthpre plugin): non_conservative {} is not "
                          "supported; forces are always the energy's gradient", value);
    } else {
      error->all(FLERR, "pair_style metatomic: unknown option '{}' (known: device, "
                        "check_consistency, extensions, variant)", key);
    }
  }

  if (!std::ifstream(model_path_).good())
    error->all(FLERR, "pair_style metatomic: model file '{}' does not exist or cannot be read",
               model_path_);

  std::unique_ptr<MetatomicModelState> state;
  try {
    state = std::make_unique<MetatomicModelState>(
        metatomic_torch::load_atomistic_model(model_path_, extensions));
    state->capabilities = state->model.run_method("capabilities")
                              .toCustomClass<metatomic_torch::ModelCapabilitiesHolder>();
  } catch (const std::exception &e) {
    error->all(FLERR, "pair_style metatomic: '{}' is not a metatomic model this plugin can "
                      "load (export one with `synthpre export`): {}", model_path_, e.what());
  }
  auto &caps = state->capabilities;
  try {
    state->energy_key = metatomic_torch::pick_output("energy", caps->outputs(), variant);
  } catch (const std::exception &e) {
    error->all(FLERR, "pair_style metatomic: the model '{}' has no usable 'energy' output: {}",
               model_path_, e.what());
  }
  state->per_atom_energy = caps->outputs().at(state->energy_key)->sample_kind() == "atom";
  state->check_consistency = check_consistency;

  if (caps->dtype() == "float64") state->dtype = torch::kFloat64;
  else if (caps->dtype() == "float32") state->dtype = torch::kFloat32;
  else error->all(FLERR, "pair_style metatomic: the model '{}' uses dtype '{}', only float32 and "
                         "float64 are supported", model_path_, caps->dtype());

  torch::DeviceType device_type;
  try {
    device_type = metatomic_torch::pick_device(caps->supported_devices, device_name);
  } catch (const std::exception &e) {
    error->all(FLERR, "pair_style metatomic: {}", e.what());
  }
  if (device_type == torch::kCUDA) {
    // one GPU per rank on a node, round robin
    MPI_Comm node;
    MPI_Comm_split_type(world, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &node);
    int node_rank = 0;
    MPI_Comm_rank(node, &node_rank);
    MPI_Comm_free(&node);
    int count = static_cast<int>(torch::cuda::device_count());
    state->device = torch::Device(torch::kCUDA, static_cast<c10::DeviceIndex>(node_rank % count));
  } else {
    state->device = torch::Device(device_type);
  }
  state->model.to(state->device);

  nl_cutoff_ = 0.0;
  for (const auto &ivalue : state->model.run_method("requested_neighbor_lists").toList()) {
    auto options = ivalue.get().toCustomClass<metatomic_torch::NeighborListOptionsHolder>();
    double cutoff = options->engine_cutoff(LENGTH_UNIT);
    if (!(cutoff > 0.0) || !std::isfinite(cutoff))
      error->all(FLERR, "pair_style metatomic: the model '{}' asks for a neighbour list with "
                        "cutoff {} Angstrom", model_path_, cutoff);
    state->requests.push_back(options);
    state->request_cutoffs.push_back(cutoff);
    nl_cutoff_ = std::max(nl_cutoff_, cutoff);
  }
  interaction_range_ = caps->engine_interaction_range(LENGTH_UNIT);
  if (interaction_range_ < 0) interaction_range_ = nl_cutoff_;  // not declared: short-ranged
  if (!std::isfinite(interaction_range_) && comm->nprocs > 1)
    error->all(FLERR, "pair_style metatomic: the model '{}' declares an infinite interaction "
                      "range, so it cannot be split over MPI ranks; run it on one rank",
               model_path_);
  interaction_range_ = std::max(interaction_range_, nl_cutoff_);

  // several ranks: ghosts owned elsewhere carry features the owned atoms need, so they
  // need their own neighbour lists; on one rank every ghost is an image of an owned atom
  ghostneigh = comm->nprocs > 1 ? 1 : 0;

  if (comm->me == 0)
    utils::logmesg(lmp, "pair_style metatomic: {} on {} ({}), neighbour cutoff {} A, "
                        "interaction range {} A\n", model_path_, state->device.str(),
                   caps->dtype(), nl_cutoff_, interaction_range_);
  model_ = std::move(state);
  if (!allocated) allocate();
}

// pair_coeff * * Z1 Z2 ... : one atomic number per LAMMPS atom type
void PairMetatomicPlugin::coeff(int narg, char **arg)
{
  if (!allocated) allocate();
  if (!model_) error->all(FLERR, "pair_coeff before pair_style metatomic MODEL");
  int ntypes = atom->ntypes;
  if (narg < 2 || strcmp(arg[0], "*") != 0 || strcmp(arg[1], "*") != 0)
    error->all(FLERR, "pair_style metatomic takes 'pair_coeff * * Z1 ... Z{}': one atomic number "
                      "per atom type", ntypes);
  if (narg - 2 != ntypes)
    error->all(FLERR, "pair_coeff * * for pair_style metatomic needs one atomic number per atom "
                      "type: this system has {} atom type(s), the line gives {}", ntypes, narg - 2);
  const auto &known = model_->capabilities->atomic_types;
  std::string known_list;
  for (auto z : known) known_list += (known_list.empty() ? "" : ", ") + std::to_string(z);
  for (int t = 1; t <= ntypes; t++) {
    int z = utils::inumeric(FLERR, arg[t + 1], false, lmp);
    if (z <= 0)
      error->all(FLERR, "pair_coeff: atom type {} is given atomic number {}; atomic numbers are "
                        "positive", t, z);
    if (std::find(known.begin(), known.end(), z) == known.end())
      error->all(FLERR, "pair_coeff: atom type {} is atomic number {}, an element the model '{}' "
                        "does not know (it knows atomic numbers {})", t, z, model_path_,
                 known_list);
    atomic_number_[t] = z;
  }
}

void PairMetatomicPlugin::init_style()
{
  check_units();
  if (!model_) error->all(FLERR, "pair_style metatomic has no model");
  for (int t = 1; t <= atom->ntypes; t++)
    if (atomic_number_[t] <= 0)
      error->all(FLERR, "pair_style metatomic: atom type {} has no atomic number; give one per "
                        "type with 'pair_coeff * * Z1 ... Z{}'", t, atom->ntypes);
  if (!atom->tag_enable) error->all(FLERR, "pair_style metatomic needs atom IDs (atom_modify id yes)");
  if (force->newton_pair == 0)
    error->all(FLERR, "pair_style metatomic needs newton pair on (forces on ghost atoms are "
                      "sent back to their owners)");
  report_size_ = true;
  int flags = NeighConst::REQ_FULL;
  if (ghostneigh) flags |= NeighConst::REQ_GHOST;
  neighbor->add_request(this, flags);
  if (comm->nprocs > 1) {
    if (comm->mode != Comm::SINGLE)
      error->all(FLERR, "pair_style metatomic needs comm_modify mode single");
    // every rank needs the model's whole interaction range in ghosts (plus the skin, as
    // atoms move between neighbour-list builds)
    double need = interaction_range_ + neighbor->skin;
    if (comm->cutghostuser < need) comm->cutghostuser = need;
  }
}

double PairMetatomicPlugin::init_one(int i, int j)
{
  cutghost[i][j] = cutghost[j][i] = nl_cutoff_;
  return nl_cutoff_;
}

void PairMetatomicPlugin::map_images(NeighList *nlist, bool ghost_lists)
{
  int nlocal = atom->nlocal, nall = nlocal + atom->nghost;
  double **x = atom->x;
  tagint *tag = atom->tag;
  system_of_.assign(nall, -1);
  shift_of_.assign(nall, {0, 0, 0});
  system_atoms_.clear();
  tag_to_system_.clear();
  tag_to_system_.reserve(2 * nlocal + 16);
  for (int i = 0; i < nlocal; i++) {
    system_of_[i] = i;
    system_atoms_.push_back(i);
    tag_to_system_[tag[i]] = i;
  }
  if (ghost_lists) {
    // one image per atom owned elsewhere: the one with the most neighbours
    std::unordered_map<long long, int> best;
    for (int i = nlocal; i < nall; i++) {
      if (tag_to_system_.count(tag[i])) continue;
      auto it = best.find(tag[i]);
      if (it == best.end()) best.emplace(tag[i], i);
      else if (nlist->numneigh[i] > nlist->numneigh[it->second]) it->second = i;
    }
    for (int i = nlocal; i < nall; i++) {
      auto it = best.find(tag[i]);
      if (it != best.end() && it->second == i) {
        tag_to_system_[tag[i]] = static_cast<int>(system_atoms_.size());
        system_atoms_.push_back(i);
      }
    }
  }
  const double xprd = domain->xprd, yprd = domain->yprd, zprd = domain->zprd;
  const double xy = domain->xy, xz = domain->xz, yz = domain->yz;
  for (int i = nlocal; i < nall; i++) {
    auto it = tag_to_system_.find(tag[i]);
    if (it == tag_to_system_.end())
      error->one(FLERR, "pair_style metatomic: ghost atom ID {} is not an image of an atom of "
                        "this rank (internal error)", static_cast<long long>(tag[i]));
    int s = it->second;
    system_of_[i] = s;
    int r = system_atoms_[s];
    // x_i = x_r + na a + nb b + nc c with a = (xprd,0,0), b = (xy,yprd,0), c = (xz,yz,zprd)
    double dx = x[i][0] - x[r][0], dy = x[i][1] - x[r][1], dz = x[i][2] - x[r][2];
    double nc = dz / zprd;
    double nb = (dy - nc * yz) / yprd;
    double na = (dx - nb * xy - nc * xz) / xprd;
    shift_of_[i] = {static_cast<int>(std::lround(na)), static_cast<int>(std::lround(nb)),
                    static_cast<int>(std::lround(nc))};
  }
}

void PairMetatomicPlugin::compute(int eflag, int vflag)
{
  ev_init(eflag, vflag);
  if (vflag_atom)
    error->all(FLERR, "pair_style metatomic: per-atom virial (compute stress/atom) is not "
                      "supported; the global virial and pressure are");
  auto &m = *model_;
  const bool ghost_lists = ghostneigh != 0;
  map_images(list, ghost_lists);

  const int nlocal = atom->nlocal;
  const int nsys = static_cast<int>(system_atoms_.size());
  if (report_size_) {  // the cost of the ghost shell, in atoms the model evaluates
    report_size_ = false;
    int counts[2] = {nlocal, nsys - nlocal}, most[2] = {0, 0};
    MPI_Allreduce(counts, most, 2, MPI_INT, MPI_MAX, world);
    if (comm->me == 0)
      utils::logmesg(lmp, "pair_style metatomic: the model evaluates up to {} owned + {} ghost "
                          "atoms per rank\n", most[0], most[1]);
  }
  double **x = atom->x;
  double **f = atom->f;
  int *type = atom->type;

  auto f64 = torch::TensorOptions().dtype(torch::kFloat64);
  auto i32 = torch::TensorOptions().dtype(torch::kInt32);
  auto positions0 = torch::empty({nsys, 3}, f64);
  auto types = torch::empty({nsys}, i32);
  {
    auto p = positions0.accessor<double, 2>();
    auto t = types.accessor<int32_t, 1>();
    for (int s = 0; s < nsys; s++) {
      int i = system_atoms_[s];
      p[s][0] = x[i][0];
      p[s][1] = x[i][1];
      p[s][2] = x[i][2];
      t[s] = atomic_number_[type[i]];
    }
  }
  auto cell0 = torch::zeros({3, 3}, f64);
  {
    auto c = cell0.accessor<double, 2>();
    if (domain->xperiodic) c[0][0] = domain->xprd;
    if (domain->yperiodic) { c[1][0] = domain->xy; c[1][1] = domain->yprd; }
    if (domain->zperiodic) { c[2][0] = domain->xz; c[2][1] = domain->yz; c[2][2] = domain->zprd; }
  }
  auto pbc = torch::tensor({domain->xperiodic != 0, domain->yperiodic != 0,
                            domain->zperiodic != 0}, torch::TensorOptions().dtype(torch::kBool));

  auto positions_leaf = positions0.to(m.device).requires_grad_(true);
  auto strain = torch::eye(3, f64.device(m.device)).requires_grad_(true);
  auto system = torch::make_intrusive<metatomic_torch::SystemHolder>(
      types.to(m.device), positions_leaf.matmul(strain).to(m.dtype),
      cell0.to(m.device).matmul(strain).to(m.dtype), pbc.to(m.device));

  // the model's neighbour lists, from LAMMPS's full list (owned atoms, and ghosts' own
  // lists with several ranks), one entry per pair of System atoms and cell shift
  const int ncentral = list->inum + (ghost_lists ? list->gnum : 0);
  auto xyz = torch::make_intrusive<metatensor_torch::LabelsHolder>(
      std::vector<std::string>{"xyz"}, torch::arange(3, i32).reshape({3, 1}).to(m.device));
  auto distance = torch::make_intrusive<metatensor_torch::LabelsHolder>(
      std::vector<std::string>{"distance"}, torch::zeros({1, 1}, i32).to(m.device));
  std::vector<int32_t> samples;
  std::vector<double> vectors;
  for (size_t k = 0; k < m.requests.size(); k++) {
    const double cut2 = m.request_cutoffs[k] * m.request_cutoffs[k];
    const bool full = m.requests[k]->full_list();
    samples.clear();
    vectors.clear();
    for (int ii = 0; ii < ncentral; ii++) {
      int i = list->ilist[ii];
      int si = system_of_[i];
      if (system_atoms_[si] != i) continue;  // another image of this System atom is central
      const int *jlist = list->firstneigh[i];
      for (int jj = 0; jj < list->numneigh[i]; jj++) {
        int j = jlist[jj] & NEIGHMASK;
        double d0 = x[j][0] - x[i][0], d1 = x[j][1] - x[i][1], d2 = x[j][2] - x[i][2];
        if (d0 * d0 + d1 * d1 + d2 * d2 > cut2) continue;
        int sj = system_of_[j];
        const auto &sh = shift_of_[j];
        if (!full) {  // half list: each pair once (the pair and its reverse are both here)
          if (si > sj) continue;
          if (si == sj) {
            bool positive = sh[0] > 0 || (sh[0] == 0 && (sh[1] > 0 || (sh[1] == 0 && sh[2] > 0)));
            if (!positive) continue;
          }
        }
        samples.insert(samples.end(), {si, sj, sh[0], sh[1], sh[2]});
        vectors.insert(vectors.end(), {d0, d1, d2});
      }
    }
    int64_t npairs = static_cast<int64_t>(vectors.size() / 3);
    auto values = torch::from_blob(vectors.data(), {npairs, 3, 1}, f64)
                      .to(m.device, m.dtype, false, true);
    auto sample_values = torch::from_blob(samples.data(), {npairs, 5}, i32).to(m.device, false, true);
    auto sample_labels = torch::make_intrusive<metatensor_torch::LabelsHolder>(
        std::vector<std::string>{"first_atom", "second_atom", "cell_shift_a", "cell_shift_b",
                                 "cell_shift_c"},
        sample_values, metatensor::assume_unique{});
    auto block = torch::make_intrusive<metatensor_torch::TensorBlockHolder>(
        values, sample_labels, std::vector<metatensor_torch::Labels>{xyz}, distance);
    metatomic_torch::register_autograd_neighbors(system, block, m.check_consistency);
    system->add_neighbor_list(m.requests[k], block);
  }

  auto options = torch::make_intrusive<metatomic_torch::ModelEvaluationOptionsHolder>();
  options->set_length_unit(LENGTH_UNIT);
  auto output = torch::make_intrusive<metatomic_torch::ModelOutputHolder>();
  output->set_unit(ENERGY_UNIT);
  if (eflag_atom && !m.per_atom_energy)
    error->all(FLERR, "pair_style metatomic: the model '{}' has no per-atom energies (asked for "
                      "by a per-atom compute)", model_path_);
  output->set_sample_kind(eflag_atom ? "atom" : "system");
  options->outputs.insert(m.energy_key, output);
  if (nsys > nlocal) {  // ghosts owned elsewhere are in the System: count owned atoms only
    auto selected = torch::zeros({nlocal, 2}, i32);
    selected.index_put_({torch::indexing::Slice(), 1}, torch::arange(nlocal, i32));
    options->set_selected_atoms(torch::make_intrusive<metatensor_torch::LabelsHolder>(
        std::vector<std::string>{"system", "atom"}, selected.to(m.device),
        metatensor::assume_unique{}));
  }

  torch::Tensor energies;
  metatensor_torch::Labels energy_samples;
  try {
    auto result = m.model
                      .forward({std::vector<metatomic_torch::System>{system}, options,
                                m.check_consistency})
                      .toGenericDict();
    auto tmap = result.at(m.energy_key).toCustomClass<metatensor_torch::TensorMapHolder>();
    auto block = metatensor_torch::TensorMapHolder::block_by_id(tmap, 0);
    energies = block->values();
    energy_samples = block->samples();
  } catch (const std::exception &e) {
    error->one(FLERR, "pair_style metatomic: evaluating the model '{}' failed: {}", model_path_,
               e.what());
  }
  auto total = energies.to(torch::kFloat64).sum();
  total.backward();

  auto grad = positions_leaf.grad().to(torch::kCPU);
  auto g = grad.accessor<double, 2>();
  for (int s = 0; s < nsys; s++) {
    int i = system_atoms_[s];
    f[i][0] -= g[s][0];
    f[i][1] -= g[s][1];
    f[i][2] -= g[s][2];
  }
  if (eflag_global) eng_vdwl += total.item<double>();
  if (eflag_atom) {
    auto e = energies.detach().to(torch::kCPU).to(torch::kFloat64).reshape({-1});
    auto atoms = energy_samples->column("atom").to(torch::kCPU);
    auto ea = e.accessor<double, 1>();
    auto ia = atoms.accessor<int32_t, 1>();
    for (int64_t k = 0; k < e.size(0); k++) eatom[ia[k]] += ea[k];
  }
  if (vflag_global) {
    // virial W = sum r f = -dE/dstrain (symmetrised; LAMMPS order xx yy zz xy xz yz)
    auto w = strain.grad().to(torch::kCPU);
    auto a = w.accessor<double, 2>();
    virial[0] -= a[0][0];
    virial[1] -= a[1][1];
    virial[2] -= a[2][2];
    virial[3] -= 0.5 * (a[0][1] + a[1][0]);
    virial[4] -= 0.5 * (a[0][2] + a[2][0]);
    virial[5] -= 0.5 * (a[1][2] + a[2][1]);
  }
}
