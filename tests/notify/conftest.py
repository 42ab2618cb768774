"""The security tests' demo region and service (``tests/security/conftest.py``), for the
notification tests."""

from tests.security import conftest as security

world = security.world
app = security.app
settings_on_each_database = security.settings_on_each_database
