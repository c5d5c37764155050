"""The web console (issue 14): server-rendered pages under /ui on the controller, signed in with
a virtfleet user's token, calling the same fleet services and permission checks as /api/v1."""
