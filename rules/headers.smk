# rules for the headers stage (see workflow/headers.py)
