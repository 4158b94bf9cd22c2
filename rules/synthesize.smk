# rules for the synthesize stage (see workflow/synthesize.py)
