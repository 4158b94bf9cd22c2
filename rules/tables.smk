# rules for the tables stage (see workflow/tables.py)
