"""placeholder: replaced by the agent task module."""
