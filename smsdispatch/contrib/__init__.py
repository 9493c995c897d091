"""Integrations with the frameworks of the apps that call smsdispatch. Each subpackage imports its
framework only when it is used: `import smsdispatch` never needs one installed."""
