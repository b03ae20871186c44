"""Content safety: the NSFW check behind `checkNSFW` / `safety.checkContent`."""

from kiln.safety.nsfw import Detection, NSFWChecker, is_nsfw

__all__ = ["Detection", "NSFWChecker", "is_nsfw"]
