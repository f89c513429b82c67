"""The API's routers, one per concern; each is built from the shared `Service` (serve/service.py)."""
