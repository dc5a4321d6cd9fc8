"""Drop-in shell scripts for Leginon's external-script finders (package data)."""
