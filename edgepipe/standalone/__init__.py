"""Export and bench of files on their own, without a run directory: what the API's ``export`` and ``bench``
call for a model file or artifact files. They reuse the stages' machinery; the stages never import them."""
