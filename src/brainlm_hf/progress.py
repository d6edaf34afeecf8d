# Copyright 2026 The brainlm_hf authors. Licensed under the Apache License, Version 2.0.
"""Progress of a long command (prepare, embed, attention, convert) on stderr: a bar with the rate and the time left
while it runs, then one summary line (recordings, windows, rate, time). `quiet=True` prints neither."""

import sys
import time


class Progress:
    """
    Counts the recordings a command has finished out of `total`, showing a `tqdm` bar (rate and ETA) on stderr.

    Args:
        command (`str`): the command's name, which starts the summary line (`"prepare"`).
        total (`int`): how many recordings the command will finish (None: not known yet, see `set_total`).
        quiet (`bool`): show nothing (no bar, no summary line).
        bar (`bool`): show the bar (`False`: the summary line alone, for a command whose work shows its own bar).
        unit (`str`): what the bar counts (`"recording"`; `"tensor"` for convert, whose summary a subclass writes).

    Example:

    ```python
    >>> with Progress("embed", total=len(recordings)) as progress:
    ...     for recording in recordings:
    ...         progress.update(windows=len(embed(recording)))
    embed: 40 recordings, 120 windows in 12.5 s (3.2 recordings/s)
    ```
    """

    def __init__(
        self, command: str, total: int | None, quiet: bool = False, bar: bool = True, unit: str = "recording"
    ):
        self.command, self.total, self.quiet = command, total, quiet
        self.recordings, self.windows = 0, 0
        self.start = time.perf_counter()
        self.finished = False
        self.bar, self.unit, self.shows_bar = None, unit, not quiet and bar
        if total is not None:
            self.set_total(total)

    def set_total(self, total: int) -> None:
        """Count out of `total`, once, when the command was started with `total=None` (its work's size known only
        once it runs): the bar appears now; the summary's time still runs from the start."""
        self.total = total
        if self.shows_bar and self.bar is None:
            from tqdm.auto import tqdm

            self.bar = tqdm(total=total, desc=self.command, unit=self.unit, file=sys.stderr, dynamic_ncols=True)

    def update(self, recordings: int = 1, windows: int = 0) -> None:
        """Count `recordings` more finished recordings, holding `windows` windows."""
        self.recordings += recordings
        self.windows += windows
        if self.bar is not None:
            self.bar.update(recordings)

    def summary(self) -> str:
        """`"<command>: R recordings, W windows in S s (X recordings/s)"`, from the counts so far."""
        seconds = time.perf_counter() - self.start
        rate = self.recordings / seconds if seconds > 0 else float("inf")
        return (
            f"{self.command}: {self.recordings} recordings, {self.windows} windows in {seconds:.1f} s "
            f"({rate:.2f} recordings/s)"
        )

    def close(self, windows: int | None = None) -> None:
        """Close the bar and print the summary line (once); `windows` sets the window count when known only now."""
        if windows is not None:
            self.windows = windows
        if not self.finished and not self.quiet:
            self.close_bar()
            print(self.summary(), file=sys.stderr)
        self.finished = True

    def close_bar(self) -> None:
        """End the bar (its line stays) when the counted work is done, before what follows prints anything."""
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        if exc[0] is None:
            self.close()
        else:  # an error: no summary of unfinished work
            self.close_bar()
            self.finished = True
