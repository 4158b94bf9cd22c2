# rules for the report stage (see workflow/report.py)
