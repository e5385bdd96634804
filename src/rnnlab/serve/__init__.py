"""`rnnlab serve`: the playground, a web page over trained runs, served by the package itself.

`app` builds the ASGI app (FastAPI) over `rnnlab.api`; `security` holds what guards a server on
a port (Host allow-list, same-origin check, body limit, bounded worker pool, security headers);
`config` the limits and settings; `static/` is the page (HTML, JS, CSS: no build step, no CDN,
works offline). Nothing is imported here, so `rnnlab.serve.config` loads without the web
framework: `from rnnlab.serve.app import create_app` builds the app.
"""
