// pair_style metatomic as a LAMMPS plugin (synthpre): runs any metatomic model
// (an exported TorchScript file) inside a stock LAMMPS that has the PLUGIN package.
//
// Syntax follows metatensor's own pair style, so input scripts written for it run here:
//   pair_style metatomic MODEL.pt [device cpu|cuda] [check_consistency on|off]
//                                 [extensions DIR] [variant NAME]
//   pair_coeff * * Z1 Z2 ...       (one atomic number per LAMMPS atom type)
#ifndef SYNTHPRE_PAIR_METATOMIC_PLUGIN_H
#define SYNTHPRE_PAIR_METATOMIC_PLUGIN_H

#include "pair.h"

#include <array>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

namespace LAMMPS_NS {

struct MetatomicModelState;  // torch objects, kept out of this header

class PairMetatomicPlugin : public Pair {
 public:
  PairMetatomicPlugin(class LAMMPS *);
  ~PairMetatomicPlugin() override;

  void compute(int, int) override;
  void settings(int, char **) override;
  void coeff(int, char **) override;
  void init_style() override;
  double init_one(int, int) override;

 private:
  void allocate();
  void check_units() const;
  void map_images(class NeighList *list, bool ghost_lists);

  std::unique_ptr<MetatomicModelState> model_;
  std::string model_path_;
  std::vector<int> atomic_number_;  // per LAMMPS type (1-based); 0 = not given

  double nl_cutoff_ = 0.0;          // largest neighbour-list cutoff the model asks for (Å)
  double interaction_range_ = 0.0;  // how far ghosts must reach for each rank (Å)
  bool report_size_ = true;         // log the model's system size at the first compute

  // Each LAMMPS atom (local or ghost) is an image of one atom of the model's System:
  // system_of_[i] = index in the System, shift_of_[i] = integer cell shift from it.
  std::vector<int> system_of_;
  std::vector<std::array<int, 3>> shift_of_;
  std::vector<int> system_atoms_;  // LAMMPS index of each System atom (locals first)
  std::unordered_map<long long, int> tag_to_system_;
};

}  // namespace LAMMPS_NS

#endif
