"""ezrunner.tui: the Textual wizard. Heavy work runs in workers; nothing here
imports docker, the hub clients or torch at module level."""
