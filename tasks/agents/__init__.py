"""Agent CLIs without Celery: profiles (argv and answer parsing), the process
runner (process-group deadline) and the per-host slots."""
from .profiles import PROFILES, Profile, get_profile
from .runner import run
from .slots import HostSlots

__all__ = ["PROFILES", "HostSlots", "Profile", "get_profile", "run"]
