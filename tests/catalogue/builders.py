"""Builders shared by the tables on run folders: each change takes a copy of a run folder and damages it."""

from __future__ import annotations

import json
import shutil


def run_copy(which: str, change=None, name="run"):
    """A copy of the completed or resumable run, changed by `change(copy)`."""
    def copy(tmp, completed, resumable):
        folder = shutil.copytree(completed if which == "completed" else resumable, tmp / name)
        if change:
            change(folder)
        return folder
    return copy


def on_run(command: str, which: str, change=None, *extra):
    def make(tmp, data, completed, resumable, diverged):
        folder = run_copy(which, change)(tmp, completed, resumable)
        args = ["train", "--resume", folder] if command == "resume" else [command, folder]
        if command in ("resume", "evaluate", "ensemble"):
            args += ["--data-dir", data]
        return [*args, *[e(tmp) if callable(e) else e for e in extra]], folder
    return make


def write(name: str, content: bytes | str):
    def change(folder):
        target = next(folder.rglob(name)) if "*" in name else folder / name
        target.write_bytes(content if isinstance(content, bytes) else content.encode())
    return change


def edit_json(name: str, **values):
    def change(folder):
        data = json.loads((folder / name).read_text())
        data.update(values)
        (folder / name).write_text(json.dumps(data))
    return change


def remove(name: str):
    def change(folder):
        target = next(folder.rglob(name)) if "*" in name else folder / name
        shutil.rmtree(target) if target.is_dir() else target.unlink()
    return change


def truncate(name: str, keep: int = 40):
    def change(folder):
        target = next(folder.rglob(name))
        target.write_bytes(target.read_bytes()[:keep])
    return change


def flip_byte(name: str, at: int = -20):
    def change(folder):
        target = next(folder.rglob(name))
        raw = bytearray(target.read_bytes())
        raw[at] ^= 0xFF
        target.write_bytes(bytes(raw))
    return change



def not_a_run(command: str):
    def make(tmp, data, completed, resumable, diverged):
        folder = tmp / "notes"
        folder.mkdir()
        (folder / "metrics.json").write_text('{"mine": true}')
        (folder / "report.html").write_text("<p>my own page</p>")
        args = ["train", "--resume", folder] if command == "resume" else [command, folder]
        return args, folder
    return make

