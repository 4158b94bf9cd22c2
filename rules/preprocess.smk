# rules for the preprocess stage (see workflow/preprocess.py)
