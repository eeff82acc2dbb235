"""What every HTTP API of OpenLFR shares: authentication and roles, input limits, errors."""
