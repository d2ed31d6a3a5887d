"""The offline HTML reports: figures (:mod:`.figures`), the page builder (:mod:`.page`),
the cohort report (:mod:`.cohort`) and the planning-system check page (:mod:`.tps`)."""
