"""The JSON API (django-ninja), described by OpenAPI at /api/openapi.json."""
