"""Where releases happen: `local` (embedded, default), `kubernetes`, `kind`. Never imports pytest."""
