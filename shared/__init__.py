"""Virtual-appointment join links: the app package behind function_app.py."""
