# rules for the train stage (see workflow/train.py)
