"""Dependencies inside peft_video run one way, checked on the source (``ast``), not by convention.

- The low layers (the PVLA solver and loss in ``alignment``, the ``tuners``, and the shared ``conditioning``,
  ``video`` and ``architectures`` modules) never import ``integrations`` or ``tasks``, nor the top-level package
  (whose ``__init__`` imports everything).
- A task never imports a tuner's internals: from ``peft_video.tuners`` only a tuner package itself
  (``peft_video.tuners.rap``), and from it only names the tuner defines. A mechanism a tuner re-exports but does not
  own (the sentence condition, the video layout, the architecture tables) is imported from its home module
  (``peft_video.conditioning``, ``peft_video.video``, ``peft_video.architectures``).
"""

from __future__ import annotations

import ast
import importlib
from collections.abc import Iterator
from pathlib import Path

import peft_video

PACKAGE_DIR = Path(peft_video.__file__).resolve().parent
ROOT = PACKAGE_DIR.parent
LOW_LAYERS = (
    "peft_video.alignment",
    "peft_video.tuners",
    "peft_video.conditioning",
    "peft_video.video",
    "peft_video.architectures",
)
HIGH_LAYERS = ("peft_video.integrations", "peft_video.tasks")

# Known violations, each (imported module, name) by any task file, to be removed by whoever fixes the import.
ALLOWED: set[tuple[str, str]] = set()


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def under(name: str, prefixes: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def imports(source: str, name: str, is_package: bool = False) -> Iterator[tuple[str, tuple[str, ...]]]:
    """Every import in the source of module ``name`` (also inside functions) as (absolute module, names)."""
    package = name if is_package else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, ()
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            yield module, tuple(alias.name for alias in node.names)


def submodules(module: str, names: tuple[str, ...]) -> list[str]:
    """Which of ``names`` are modules of ``module`` (``from a import b`` loads ``a.b`` when that is a module)."""
    found = []
    for name in names:
        try:
            importlib.import_module(f"{module}.{name}")
        except ImportError:
            continue
        found.append(f"{module}.{name}")
    return found


Source = tuple[str, str, str]  # (file shown in messages, module name, source text)


def package_sources() -> list[Source]:
    paths = sorted(p for p in PACKAGE_DIR.rglob("*.py") if "__pycache__" not in p.parts)
    return [(str(p.relative_to(ROOT)), module_name(p), p.read_text(encoding="utf-8")) for p in paths]


def low_layer_violations(sources: list[Source]) -> list[str]:
    """Imports of integrations / tasks / the top-level package by the low layers."""
    found = []
    for where, name, source in sources:
        if not under(name, LOW_LAYERS):
            continue
        for module, names in imports(source, name, where.endswith("__init__.py")):
            if not under(module, ("peft_video",)):
                continue
            loaded = [module, *submodules(module, names)]
            found += [f"{where} imports {m}" for m in loaded if under(m, HIGH_LAYERS)]
            if module == "peft_video" and len(loaded) - 1 < max(len(names), 1):
                found.append(f"{where} imports the top-level package peft_video (which imports everything)")
    return found


def task_violations(sources: list[Source]) -> set[tuple[str, str, str]]:
    """(file, module, name) of every task import of a tuner internal ("*": the whole module)."""
    found = set()
    for where, name, source in sources:
        if not under(name, ("peft_video.tasks",)):
            continue
        for module, names in imports(source, name, where.endswith("__init__.py")):
            if not under(module, ("peft_video.tuners",)):
                continue
            for target in [module, *submodules(module, names)]:
                if target == "peft_video.tuners":
                    continue
                parts = target.split(".")
                tuner = ".".join(parts[:3])
                if (
                    parts[2].startswith("_")
                    or target != tuner
                    or not hasattr(importlib.import_module(tuner), "__path__")
                ):
                    found.add((where, target, "*"))  # a tuner's internal module
            if module.count(".") == 2 and not module.split(".")[2].startswith("_"):
                package = importlib.import_module(module)
                for imported in names:
                    home = getattr(getattr(package, imported, None), "__module__", None)
                    if isinstance(home, str) and not under(home, (module,)):
                        found.add(
                            (where, module, imported)
                        )  # re-exported from elsewhere: import it from its home
    return found


def test_low_layers_never_import_integrations_tasks_or_the_top_level_package():
    violations = low_layer_violations(package_sources())
    assert not violations, "\n".join(violations)


def test_tasks_import_tuners_only_through_their_public_package_names():
    violations = {(w, m, n) for w, m, n in task_violations(package_sources()) if (m, n) not in ALLOWED}
    assert not violations, "\n".join(f"{w} imports {n!r} from {m}" for w, m, n in sorted(violations))


def test_allow_list_has_no_stale_entries():
    stale = ALLOWED - {(m, n) for _, m, n in task_violations(package_sources())}
    assert not stale, (
        f"these violations are gone: delete their ALLOWED entries in {__file__}: {sorted(stale)}"
    )


def test_the_rules_catch_what_they_forbid():
    """Each rule fails on a module that breaks it (relative imports resolved as Python does)."""
    low = [
        ("a.py", "peft_video.alignment.a", "from ..integrations.card_info import get_card_info"),
        ("b.py", "peft_video.tuners.read.b", "from ... import tasks"),
        ("c.py", "peft_video.tuners.rap.c", "def f():\n    import peft_video"),
        ("d.py", "peft_video.conditioning", "from . import ReadConfig"),
        ("ok.py", "peft_video.tuners.read.ok", "from ...video import use_num_frames\nfrom .. import _config"),
    ]
    assert low_layer_violations(low) == [
        "a.py imports peft_video.integrations.card_info",
        "b.py imports peft_video.tasks",
        "c.py imports the top-level package peft_video (which imports everything)",
        "d.py imports the top-level package peft_video (which imports everything)",
    ]
    tasks = [
        ("t.py", "peft_video.tasks.t", "from ..tuners.rap.asa import plan_warp"),
        ("u.py", "peft_video.tasks.u", "from ..tuners import _config"),
        ("v.py", "peft_video.tasks.v", "from ..tuners.rap import rap_condition, RapConfig"),
        (
            "ok.py",
            "peft_video.tasks.ok",
            "from ..tuners.rap import RapConfig\nfrom ..conditioning import rap_condition",
        ),
    ]
    assert task_violations(tasks) == {
        ("t.py", "peft_video.tuners.rap.asa", "*"),
        ("u.py", "peft_video.tuners._config", "*"),
        ("v.py", "peft_video.tuners.rap", "rap_condition"),
    }
