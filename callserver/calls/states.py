"""Call states and end reasons (DESIGN.md: ringing → answered → ended)."""

from enum import StrEnum

# How a site's calls ring is a site setting: it lives with the site (dashboard/views.py imports it here).
from callserver.sites.site import RingStrategy

__all__ = ["CallState", "EndReason", "RingStrategy"]


class CallState(StrEnum):
    RINGING = "ringing"
    ANSWERED = "answered"
    ENDED = "ended"


class EndReason(StrEnum):
    COMPLETED = "completed"
    MISSED = "missed"
    ABANDONED = "abandoned"  # the shopper left before an answer
    DECLINED = "declined"
    FAILED = "failed"
    DROPPED = "dropped"  # the server went away
    LOST = "lost"  # one side's connection was lost and did not come back within `resume_window`
