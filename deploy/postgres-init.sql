-- Runs once, when the postgres volume is first initialised: one database per service, each owned
-- by the service's own role, which can connect to nothing else; so no service can read or
-- change another's tables.  POSTGRES_USER (the cluster's superuser) stays for the operator only.
-- The roles' passwords come from the container's environment (psql's \getenv, PostgreSQL 15+):
-- POSTGRES_PASSWORD_INTAKE, ..._ROUTING, ..._VERIFICATION, ..._FEEDBACK (docker-compose.yml).
\set ON_ERROR_STOP on
\getenv intake_password POSTGRES_PASSWORD_INTAKE
\getenv routing_password POSTGRES_PASSWORD_ROUTING
\getenv verification_password POSTGRES_PASSWORD_VERIFICATION
\getenv feedback_password POSTGRES_PASSWORD_FEEDBACK

CREATE ROLE intake LOGIN PASSWORD :'intake_password';
CREATE ROLE routing LOGIN PASSWORD :'routing_password';
CREATE ROLE verification LOGIN PASSWORD :'verification_password';
CREATE ROLE feedback LOGIN PASSWORD :'feedback_password';

-- The owner creates the tables (the migration job connects as it); since PostgreSQL 15 the
-- public schema belongs to the database's owner, and nobody else may create in it.
CREATE DATABASE intake OWNER intake;
CREATE DATABASE routing OWNER routing;
CREATE DATABASE verification OWNER verification;
CREATE DATABASE feedback OWNER feedback;

-- Every role may connect to every database by default (PUBLIC); only the owner may now.
REVOKE ALL ON DATABASE intake, routing, verification, feedback FROM PUBLIC;
GRANT CONNECT, TEMPORARY ON DATABASE intake TO intake;
GRANT CONNECT, TEMPORARY ON DATABASE routing TO routing;
GRANT CONNECT, TEMPORARY ON DATABASE verification TO verification;
GRANT CONNECT, TEMPORARY ON DATABASE feedback TO feedback;
-- The cluster's own database too: a service role has nothing to do there.
REVOKE ALL ON DATABASE postgres FROM PUBLIC;
