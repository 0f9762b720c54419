"""The `runarchive demo` command: archive, break, restore and verify a generated run."""

from __future__ import annotations

import hashlib
from pathlib import Path

from rich.console import Console

from .core import create_archive, human_bytes, list_archives, restore_archive, verify_archive
from .synthetic_run import generate_run

DEMO_RUNID = "demo-pinecone"


def _fingerprint(path: Path) -> str:
    data = path.read_bytes()
    return hashlib.sha256(data).hexdigest()[:12]


def run_demo(base: Path, console: Console) -> None:
    """Generate (once) a run under ``base``, archive it, break it, restore it, verify it."""
    run = base / DEMO_RUNID
    if not run.exists():
        console.print(f"Generating a WEPP-like demo run in [bold]{run}[/] …")
        made = generate_run(run, seed=7, target_bytes=5 * 2**20, files=300)
        console.print(f"  {made.files} files, {human_bytes(made.bytes)}")
    result = create_archive(run, "demo snapshot")
    console.print(
        f"Archive ready: [bold]{result.name}[/] ({result.files} files, "
        f"{human_bytes(result.size)} from {human_bytes(result.bytes_total)})"
    )
    victim = next(p for p in sorted(run.rglob("*.nodb")))
    before = _fingerprint(victim)
    victim.write_text("corrupted by the demo\n")
    console.print(f"Damaged {victim.relative_to(run)} ({before} → {_fingerprint(victim)})")
    report = verify_archive(run, result.name)
    console.print(f"Verified {result.name}: {'OK' if report.ok else report.problems}")
    restored = restore_archive(run, result.name)
    after = _fingerprint(victim)
    console.print(
        f"Restore complete: {restored.files} files; {victim.name} is {after} again "
        f"({'matches' if after == before else 'DOES NOT MATCH'})"
    )
    console.print("Archives of the demo run:")
    for info in list_archives(run):
        console.print(f"  {info.name}  {info.comment!r}  {human_bytes(info.size)}")
    console.print(f"Try: runarchive list {run}")
