"""Event triggers, DQL filters and cron schedules (pure: no engine, no store)."""
