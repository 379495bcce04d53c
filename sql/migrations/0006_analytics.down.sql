-- Revision 0006 downgrade: drops the analysts' views (in the reverse order of the up file).

DROP VIEW IF EXISTS analytics_preference_optouts;
DROP VIEW IF EXISTS analytics_notification_suppressions;
DROP VIEW IF EXISTS analytics_notification_funnel;
DROP VIEW IF EXISTS analytics_notification_decisions;
DROP VIEW IF EXISTS analytics_seen_to_delivered;
DROP VIEW IF EXISTS analytics_seen_daily;
DROP VIEW IF EXISTS analytics_deliveries_hourly;
