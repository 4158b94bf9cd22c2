# rules for the intake stage (see workflow/intake.py)
