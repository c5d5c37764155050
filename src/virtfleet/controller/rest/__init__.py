"""The REST API's routers, one module per resource; controller/app.py includes them."""
