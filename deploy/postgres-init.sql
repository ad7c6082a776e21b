-- Runs once, when the postgres volume is first initialised: one database per service, so no
-- service can read another's tables.  Owned by POSTGRES_USER, which the services connect as.
CREATE DATABASE intake;
CREATE DATABASE routing;
CREATE DATABASE verification;
CREATE DATABASE feedback;
