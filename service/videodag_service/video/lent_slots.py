"""Which ring slots the server has lent to the pipeline, and when each goes back to the decoder.

Apart from the ring (`frame_ring`), which only maps, fills and views its slots, and from
the run's side of the pipe (`isolated_video`): this is the one policy that decides when a
slot the decoder filled may be written again, the rule on which the frames' pixels depend.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np

from videodag_service.video.frame_ring import FrameRing

logger = logging.getLogger(__name__)


class LentSlots:
    """Frames handed to the caller as views of their ring slot, without a copy.

    A slot goes back to the decoder once no view of it is left: views cut from the slot's
    flat array (`FrameRing.slot_base`) keep that array as their `base`, so its reference
    count says whether anything (the caller, a pipeline node that keeps the previous frame,
    a slice of it) still looks at the slot. A slot is never written while it is lent.

    Lending a frame while the caller keeps all the other slots would leave the decoder no
    slot to decode into: such a frame is copied out and its slot given back at once.
    """

    def __init__(self, ring: FrameRing, release: Callable[[int], None]) -> None:
        self._ring = ring
        self._release = release
        self._lent: set[int] = set()
        self.copies = 0

    def __contains__(self, slot: int) -> bool:
        return slot in self._lent

    def lend(self, slot: int, shape: tuple[int, ...]) -> np.ndarray:
        if len(self._lent) >= self._ring.layout.slots - 1:
            if self.copies == 0:
                logger.info("the pipeline keeps %d decoded frames: copying frames out of the ring while it does",
                            len(self._lent))
            self.copies += 1
            image = self._ring.copy_out(slot, shape)
            self._release(slot)
            return image
        self._lent.add(slot)
        return self._ring.slot_array(slot, shape)

    def take_back(self) -> None:
        """Give back every lent slot no view of which is left."""
        for slot in sorted(self._lent):
            if not self._ring.is_viewed(slot):
                self._lent.remove(slot)
                self._release(slot)
