"""What a batch will do with each scan's mask, decided and checked before any compute (no torch, no dask).

    plan = plan_outputs(Path("masks"), scans, read_results("masks/results.csv"), bank_key, overwrite=False)
    plan.todo, plan.replace, plan.done, plan.edited

Per scan, from its row in results.csv and the file at its mask's name (see
:func:`napari_fewshot.batch_results.mask_state`):

- no file: segmented (the mask created exclusively, so a file that appears meanwhile is never replaced);
- done (ok with this bank, checksum matching): skipped;
- the batch's own mask of a failed, interrupted or damaged attempt with this bank: redone;
- the batch's own mask from another bank: redone only with ``overwrite``; without it the batch refuses to
  start, naming them;
- edited (its checksum differs from the one recorded, and it reads back as a mask): kept, never replaced,
  ``overwrite`` or not;
- a file without a row: not the batch's; the batch refuses to start, naming it, ``overwrite`` or not.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from .batch_results import CSV_NAME, DONE, EDITED, FOREIGN, MISSING, OTHER_BANK, mask_state
from .cohort import Scan
from .errors import FewShotError


@dataclass
class OutputPlan:
    """`todo`: scans to segment, in order; `replace`: scan name -> whether its task may replace the file
    at its mask's name (the batch's own); `done`: names skipped as done; `edited`: names whose edited
    mask is kept."""

    todo: list[Scan] = field(default_factory=list)
    replace: dict[str, bool] = field(default_factory=dict)
    done: list[str] = field(default_factory=list)
    edited: list[str] = field(default_factory=list)


def plan_outputs(output_dir: Path, scans: Sequence[Scan], rows: dict[str, dict[str, str]], bank_key: str = "",
                 overwrite: bool = False, max_label: int | None = None) -> OutputPlan:
    """Before any compute: the output folder can be made and written, each scan's mask is sorted as above
    and every mask to write can be written. FewShotError (one sentence, nothing written but the folder)
    for a foreign file at a mask's name, the batch's masks of another bank without `overwrite`, or an
    output that cannot be written (the path-level rules: :func:`napari_fewshot.io.targets.check_target`,
    with each scan as its mask's input and `max_label`, the bank's highest class, against the format)."""
    try:
        return _plan(output_dir, scans, rows, bank_key, overwrite, max_label)
    except OSError as err:  # e.g. a folder on the way that may not be entered
        raise FewShotError(f"Cannot use the output folder {output_dir} ({err.strerror or err}).") from err


def _plan(output_dir: Path, scans: Sequence[Scan], rows: dict[str, dict[str, str]], bank_key: str,
          overwrite: bool, max_label: int | None) -> OutputPlan:
    from .io.targets import check_target, check_writable

    _check_folder(output_dir)
    check_writable(output_dir / CSV_NAME)
    plan, foreign, other_bank = OutputPlan(), [], []
    for scan in scans:
        target = output_dir / scan.mask
        if target.is_dir():  # a folder where a mask goes: said by the target check
            check_target(target, 1 if scan.kind == "file" else None, overwrite=True, inputs=[scan.path],
                         max_label=max_label)
        state = mask_state(output_dir, scan.mask, rows.get(scan.name), bank_key)
        if state == FOREIGN:
            foreign.append(scan.mask)
        elif state == DONE:
            plan.done.append(scan.name)
        elif state == EDITED:
            plan.edited.append(scan.name)
        elif state == OTHER_BANK and not overwrite:
            other_bank.append(scan.mask)
        else:
            plan.todo.append(scan)
            plan.replace[scan.name] = state != MISSING
            check_target(target, 1 if scan.kind == "file" else None, overwrite=state != MISSING, inputs=[scan.path],
                         max_label=max_label)
    if foreign:
        raise FewShotError(f"{len(foreign)} mask file(s) already in {output_dir} are not in its {CSV_NAME} "
                           f"({_listed(foreign)}); the batch never replaces files it did not write: move them "
                           "away or choose another output folder.")
    if other_bank:
        raise FewShotError(f"{len(other_bank)} mask(s) in {output_dir} were written with another bank "
                           f"({_listed(other_bank)}); pass --overwrite to replace them (masks edited since are "
                           "kept) or choose another output folder.")
    return plan


def _check_folder(output_dir: Path) -> None:
    if output_dir.exists() and not output_dir.is_dir():
        raise FewShotError(f"The output folder {output_dir} is a file; give a folder for the masks.")
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise FewShotError(f"Cannot create the output folder {output_dir} ({err.strerror or err}).") from err
    if (output_dir / CSV_NAME).is_dir():
        raise FewShotError(f"{output_dir / CSV_NAME} is a folder; the batch writes its results there.")


def _listed(names: list[str]) -> str:
    return ", ".join(names[:3]) + (" ..." if len(names) > 3 else "")


__all__ = ["OutputPlan", "plan_outputs"]
