"""Four clinics' patient tables, one cohort, a disease-progression model and its report."""
