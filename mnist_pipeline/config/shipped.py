"""The configs that ship inside the package (run configs, study lessons, sweep spaces), found by name from any
folder: `--config cnn`, `--config study/perceptron`, `--space mlp`."""

from __future__ import annotations

from pathlib import Path

SHIPPED = Path(__file__).resolve().parent.parent / "configs"
SPACES = "sweeps"  # the sweep spaces' subfolder


def find(path: str | Path, space: bool = False) -> Path:
    """`path` itself, or `path`.yaml, when it exists here; else the shipped file it names (`cnn`, `cnn.yaml`,
    `configs/cnn.yaml` as typed outside the repository, `study/perceptron`; for a space, `mlp` means
    sweeps/mlp.yaml). A name that is neither comes back unchanged, for the reader to say it is not found."""
    given = Path(path)
    if given.exists() or given.is_absolute():
        return given
    if not given.suffix and given.with_name(given.name + ".yaml").is_file():  # a local file wins over a shipped one
        return given.with_name(given.name + ".yaml")
    name = given.as_posix().removeprefix("./").removeprefix("configs/")
    if space and not name.startswith(f"{SPACES}/"):
        name = f"{SPACES}/{name}"
    for candidate in (name, f"{name}.yaml"):
        found = SHIPPED / candidate
        if found.is_file() and ".." not in Path(candidate).parts:
            return found
    return given


def listing(space: bool = False) -> list[tuple[str, str]]:
    """(name to pass, what it is) of every shipped run config, or of every sweep space."""
    root = SHIPPED / SPACES if space else SHIPPED
    files = sorted(p for p in root.rglob("*.yaml") if space or SPACES not in p.relative_to(root).parts)
    return [(p.relative_to(root).with_suffix("").as_posix(), _summary(p)) for p in files]


def names(space: bool = False) -> list[str]:
    return [name for name, _ in listing(space)]


def closest(path: str | Path, space: bool = False) -> list[str]:
    """Shipped names close to a mistyped one (`cnnn` -> cnn, `perceptron` -> study/perceptron)."""
    import difflib

    typed = Path(path).as_posix().removeprefix("configs/").removesuffix(".yml").removesuffix(".yaml")
    typed = typed.removeprefix(f"{SPACES}/") if space else typed
    known = names(space)
    by_leaf = [n for n in known if n.rsplit("/", 1)[-1] == typed.rsplit("/", 1)[-1]]
    return by_leaf or difflib.get_close_matches(typed, known, n=2, cutoff=0.6)


MIN_SUMMARY = 40  # characters: "Lesson 6." alone says which lesson, not what the file is


def _summary(path: Path) -> str:
    """The first sentence of the file's opening comment (every shipped config starts by saying what it is), or
    as many as make MIN_SUMMARY characters, when the first only names its lesson."""
    comment = []
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        comment.append(line.lstrip("# ").strip())
    summary, rest = "", " ".join(comment)
    while rest and len(summary) < MIN_SUMMARY:
        end = rest.find(". ")
        sentence, rest = (rest, "") if end < 0 else (rest[:end + 1], rest[end + 2:])
        summary = f"{summary} {sentence}".strip()
    return summary
