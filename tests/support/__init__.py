"""Helpers, fakes and harness pieces shared by the unit, integration and system tests."""
