"""Views, buttons, selects and modals of the Discord front end (no service logic here)."""
