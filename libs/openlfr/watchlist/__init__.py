"""The watchlist: reference vectors of enrolled subjects, their store and their enrolment."""
