"""Runnable web apps that send SMS through smsdispatch: flask_app/ and fastapi_app/ (see each README)."""
