"""The web desk (issue 20): `abuse-gateway web`, its own process, staff only, never inside the SMTP one.

Starlette routes, one small module per area (auth, queue, case page, evidence downloads, case actions,
admin), Jinja2 templates rendered on the server with autoescape on and the display layer applied to every
value (render.py), no JavaScript, one stylesheet. Who sees what is gateway/viewing.py, the rule the CLI
applies too. The composition root (gateway/assembly.py) builds the app; this package builds no parts.
"""
