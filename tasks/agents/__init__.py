"""Agent CLIs without Celery: profiles (argv and answer parsing), the checked request,
the run of one request (runner), the process supervisor (process group, deadline) and
the per-host slots."""
from .profiles import PROFILES, Profile, get_profile
from .request import AgentRequest
from .runner import run
from .slots import HostSlots

__all__ = ["PROFILES", "AgentRequest", "HostSlots", "Profile", "get_profile", "run"]
