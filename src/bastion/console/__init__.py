"""The web console at ``/app``: pages served by the package itself over the JSON API."""
