# pg_sop two-phase commit under crashes (docs/two_phase_commit.md): every
# failure window of ../shared PG_SOP.md, each with kill -9 (a backend or
# worker dies: the postmaster restarts everything) and with an immediate
# stop, through local and Redis coordination. After the restart and the
# resolution, the foreign table and a heap table written in the same
# transaction agree (a marker row in each), pg_prepared_xacts and
# pg_sop_in_doubt are empty, no decision row is left, `sop check` is clean;
# and the server log never shows a PANIC.
#
# A step is reached with the test hook pg_sop.debug_pause_at: the backend
# logs "pg_sop: paused at POINT (pid N)" and waits to be killed.
use strict;
use warnings;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use IPC::Run;
use Time::HiRes qw(usleep);

my $sop = $ENV{SOP_CLI} or die "SOP_CLI must name the sop binary";
# tests/pg/run_tap.sh starts a private Redis and names its port
my $rport = $ENV{SOP_TAP_REDIS_PORT} or die "SOP_TAP_REDIS_PORT must name a Redis port";

my $node = PostgreSQL::Test::Cluster->new('main');
$node->init;
$node->append_conf('postgresql.conf', qq(
shared_preload_libraries = 'pg_sop'
max_prepared_transactions = 10
pg_sop.resolver_naptime = 0
restart_after_crash = on
));
$node->start;
use Cwd qw(abs_path);
my $base = abs_path($node->basedir);
$node->safe_psql('postgres', 'CREATE EXTENSION pg_sop');

my %dir;
sub setup_coord
{
	my ($coord) = @_;
	$dir{$coord} = "$base/sop_$coord";
	my $opts = $coord eq 'redis'
	  ? ", coordination 'redis', redis_host '127.0.0.1', redis_port '$rport', lock_ttl_ms '1000'"
	  : '';
	$node->safe_psql('postgres', qq(
CREATE SERVER s_$coord FOREIGN DATA WRAPPER pg_sop OPTIONS (path '$dir{$coord}'$opts);
CREATE FOREIGN TABLE f_$coord (id int OPTIONS (key 'true'), v text)
  SERVER s_$coord OPTIONS (store 'f', create_if_missing 'true', slot_length '8');
CREATE TABLE marks_$coord (id int PRIMARY KEY);
INSERT INTO f_$coord SELECT g, 'base' FROM generate_series(1, 50) g;
));
}

sub sq { return $node->safe_psql('postgres', $_[0]); }

# Runs sql in a psql that will not come back (it pauses, then dies).
my $bg_n = 0;
sub bg
{
	my ($sql) = @_;
	my ($out, $err) = ('', '');
	my $file = "$base/bg_" . $bg_n++ . '.sql';
	open(my $fh, '>', $file) or die "$file: $!";
	print $fh $sql;
	close($fh);
	return IPC::Run::start(
		[ 'psql', '-X', '-q', '-d', $node->connstr('postgres'), '-f', $file ],
		'>', \$out, '2>', \$err);
}

# The pid of the backend paused at point (from the server log).
sub paused_at
{
	my ($point, $offset) = @_;
	for (1 .. 600)
	{
		my $log = slurp_file($node->logfile, $offset);
		return $1 if $log =~ /pg_sop: paused at \Q$point\E \(pid (\d+)\)/;
		usleep(100_000);
	}
	die "nothing paused at $point";
}

# kill9: SIGKILL pid (the postmaster restarts everything); immediate:
# pg_ctl stop -m immediate, then start. Either way: usable again after.
sub crash
{
	my ($mode, $pid, $h) = @_;
	if ($mode eq 'kill9')
	{
		$pid //= sq("SELECT pid FROM pg_stat_activity WHERE backend_type = 'pg_sop launcher'");
		kill 'KILL', $pid;
		# wait until the crash restart happened and the server is back
		for (1 .. 300)
		{
			last if slurp_file($node->logfile) =~ /server process \(PID $pid\)|background worker .* \(PID $pid\)/;
			usleep(100_000);
		}
		$node->poll_query_until('postgres', 'SELECT true') or die "server not back";
	}
	else
	{
		$node->stop('immediate');
		$node->start;
	}
	if ($h) { eval { $h->finish }; eval { $h->kill_kill }; }
}

# Resolve (the function; the worker is off), then require agreement.
sub check_outcome
{
	my ($name, $coord, $id, $expect, $cond) = @_;
	$cond //= "id = $id";
	sq('SELECT count(*) FROM pg_sop_resolve()');
	is(sq("SELECT count(*) FROM f_$coord WHERE $cond"), $expect, "$name: foreign row");
	is(sq("SELECT count(*) FROM marks_$coord WHERE id = $id"), $expect, "$name: heap marker");
	is(sq('SELECT count(*) FROM pg_prepared_xacts'), '0', "$name: no prepared transaction");
	is(sq('SELECT count(*) FROM pg_sop_in_doubt'), '0', "$name: nothing in doubt");
	is(sq('SELECT count(*) FROM pg_sop_decisions'), '0', "$name: no decision row left");
	my @redis = $coord eq 'redis' ? ('--redis', "127.0.0.1:$rport") : ();
	my $out = `$sop check $dir{$coord} @redis 2>&1`;
	is($?, 0, "$name: sop check clean") or diag($out);
}

my $next_id = 1000;
my $gid_n = 0;

sub write_sql
{
	my ($coord, $id) = @_;
	return "INSERT INTO f_$coord VALUES ($id, 'new'); INSERT INTO marks_$coord VALUES ($id);";
}

# A plain transaction paused at point, crashed: expect the row or not.
sub plain_case
{
	my ($coord, $mode, $point, $expect) = @_;
	my $id = $next_id++;
	my $off = -s $node->logfile;
	my $h = bg("SET pg_sop.debug_pause_at = '$point'; BEGIN; " . write_sql($coord, $id) . " COMMIT;");
	crash($mode, paused_at($point, $off), $h);
	check_outcome("$coord/$mode/COMMIT crashed at $point", $coord, $id, $expect);
}

sub run_matrix
{
	my ($coord, $mode) = @_;
	my $t = "$coord/$mode";

	# crash after engine prepare, before PostgreSQL's commit record
	plain_case($coord, $mode, 'commit.after_engine_prepare', 0);
	# after PostgreSQL's commit, before the engine's phase 2
	plain_case($coord, $mode, 'commit.before_engine_commit', 1);
	# during the engine's phase 2 (its commit record durable, half applied)
	plain_case($coord, $mode, 'phase2.registry_half', 1);

	# PREPARE: engine prepared, PostgreSQL's prepare record never written
	my $id = $next_id++;
	my $gid = 'g' . $gid_n++;
	my $off = -s $node->logfile;
	my $h = bg("SET pg_sop.debug_pause_at = 'prepare.after_engine_prepare'; BEGIN; "
		  . write_sql($coord, $id) . " PREPARE TRANSACTION '$gid';");
	crash($mode, paused_at('prepare.after_engine_prepare', $off), $h);
	check_outcome("$t/PREPARE crashed before its record", $coord, $id, 0);

	# after PREPARE: survives the crash, blocks a conflicting write, then
	# COMMIT PREPARED makes it visible once
	$id = $next_id++;
	$gid = 'g' . $gid_n++;
	sq("BEGIN; UPDATE f_$coord SET v = '$gid' WHERE id = 7; " . write_sql($coord, $id)
		  . " PREPARE TRANSACTION '$gid';");
	crash($mode);
	is(sq('SELECT gid FROM pg_prepared_xacts'), $gid, "$t/PREPARE survived: prepared");
	is(sq("SELECT resolution FROM pg_sop_in_doubt WHERE gid = '$gid'"), 'wait',
		"$t/PREPARE survived: in doubt, waiting");
	my ($rc, $out, $err) = $node->psql('postgres', "UPDATE f_$coord SET v = 'other' WHERE id = 7");
	like($err, qr/conflict/, "$t/PREPARE survived: a conflicting write fails");
	sq("COMMIT PREPARED '$gid'");
	is(sq("SELECT v FROM f_$coord WHERE id = 7"), $gid, "$t/PREPARE survived: its update won");
	check_outcome("$t/PREPARE survived, COMMIT PREPARED", $coord, $id, 1);

	# after COMMIT / ROLLBACK PREPARED, before the engine follows
	for my $verb ('COMMIT', 'ROLLBACK')
	{
		$id = $next_id++;
		$gid = 'g' . $gid_n++;
		sq("BEGIN; " . write_sql($coord, $id) . " PREPARE TRANSACTION '$gid';");
		$off = -s $node->logfile;
		$h = bg("SET pg_sop.debug_pause_at = 'finish_prepared.before_engine'; $verb PREPARED '$gid';");
		crash($mode, paused_at('finish_prepared.before_engine', $off), $h);
		check_outcome("$t/$verb PREPARED crashed before the engine", $coord, $id,
			$verb eq 'COMMIT' ? 1 : 0);
	}

	# during the resolver's own work: an in-doubt commit, then the resolver
	# crashed after its engine commit record and after its decision
	for my $point ('prepared.commit_logged', 'resolve.after_decide')
	{
		$id = $next_id++;
		$off = -s $node->logfile;
		$h = bg("SET pg_sop.debug_pause_at = 'commit.before_engine_commit'; BEGIN; "
			  . write_sql($coord, $id) . " COMMIT;");
		crash($mode, paused_at('commit.before_engine_commit', $off), $h);
		is(sq('SELECT resolution FROM pg_sop_in_doubt'), 'commit', "$t/in doubt before the resolver");
		$off = -s $node->logfile;
		$h = bg("SET pg_sop.debug_pause_at = '$point'; SELECT * FROM pg_sop_resolve();");
		crash($mode, paused_at($point, $off), $h);
		check_outcome("$t/resolver crashed at $point", $coord, $id, 1);
	}

	# the same GID reused while the first is still in doubt in the engine
	# (updates of rows in two different leaves: a prepared transaction
	# claims the nodes it changed, and a split would claim their parent)
	my ($id1, $id2) = ($next_id++, $next_id++);
	$gid = 'reuse' . $gid_n++;
	sq("BEGIN; UPDATE f_$coord SET v = '$gid-1' WHERE id = 5; INSERT INTO marks_$coord VALUES ($id1);"
		  . " PREPARE TRANSACTION '$gid';");
	$off = -s $node->logfile;
	$h = bg("SET pg_sop.debug_pause_at = 'finish_prepared.before_engine'; COMMIT PREPARED '$gid';");
	crash($mode, paused_at('finish_prepared.before_engine', $off), $h);
	sq("BEGIN; UPDATE f_$coord SET v = '$gid-2' WHERE id = 45; INSERT INTO marks_$coord VALUES ($id2);"
		  . " PREPARE TRANSACTION '$gid';");
	sq("ROLLBACK PREPARED '$gid'");
	is(sq('SELECT count(*) FROM pg_sop_in_doubt'), '0', "$t/GID reused: both decided by the fast path");
	check_outcome("$t/GID reused: the committed one", $coord, $id1, 1, "id = 5 AND v = '$gid-1'");
	check_outcome("$t/GID reused: the rolled back one", $coord, $id2, 0, "id = 45 AND v = '$gid-2'");
}

for my $coord ('local', 'redis')
{
	setup_coord($coord);
	run_matrix($coord, $_) for ('kill9', 'immediate');

	# a prepared transaction held past the engine's lock TTL (Redis: 1 s)
	# still blocks a conflicting write; COMMIT PREPARED applies it once,
	# ROLLBACK PREPARED leaves no trace
	for my $verb ('COMMIT', 'ROLLBACK')
	{
		my $id = $next_id++;
		my $gid = 'held' . $gid_n++;
		sq("BEGIN; UPDATE f_$coord SET v = '$gid' WHERE id = 9; " . write_sql($coord, $id)
			  . " PREPARE TRANSACTION '$gid';");
		sleep 2;
		my ($rc, $out, $err) = $node->psql('postgres', "UPDATE f_$coord SET v = 'late' WHERE id = 9");
		like($err, qr/conflict/, "$coord/held past the lock TTL: a conflicting write fails");
		sq("$verb PREPARED '$gid'");
		my $want = $verb eq 'COMMIT' ? $gid : 'base';
		is(sq("SELECT v FROM f_$coord WHERE id = 9"), $want, "$coord/held, $verb PREPARED: row 9");
		is(sq("SELECT count(*) FROM f_$coord WHERE id = 9"), '1', "$coord/held, $verb PREPARED: once");
		check_outcome("$coord/held, $verb PREPARED", $coord, $id, $verb eq 'COMMIT' ? 1 : 0);
		sq("UPDATE f_$coord SET v = 'base' WHERE id = 9");
	}
}

# once clog no longer knows the xid, the decision table decides: a row
# (PostgreSQL committed) -> commit, none (it aborted) -> roll back
for my $case ([ 'commit.before_engine_commit', 1 ], [ 'commit.after_engine_prepare', 0 ])
{
	my ($point, $expect) = @$case;
	my $id = $next_id++;
	my $off = -s $node->logfile;
	my $h = bg("SET pg_sop.debug_pause_at = '$point'; BEGIN; " . write_sql('local', $id) . " COMMIT;");
	crash('kill9', paused_at($point, $off), $h);
	if ($expect)
	{
		is(sq("SELECT count(*) FROM pg_sop_decisions d JOIN pg_foreign_server s ON s.oid = d.server WHERE s.srvname = 's_local'"), '1',
			"clog unknown, crashed at $point: its decision row is there");
	}
	is(sq("SET pg_sop.debug_xid_status_unknown = on; "
		  . "SELECT action FROM pg_sop_resolve()"), $expect ? 'committed' : 'rolled back',
		"clog unknown, crashed at $point: decided by the decision table");
	check_outcome("clog unknown, crashed at $point", 'local', $id, $expect);
}

# the resolver worker decides without being asked
{
	my $id = $next_id++;
	my $off = -s $node->logfile;
	my $h = bg("SET pg_sop.debug_pause_at = 'commit.before_engine_commit'; BEGIN; "
		  . write_sql('local', $id) . " COMMIT;");
	crash('kill9', paused_at('commit.before_engine_commit', $off), $h);
	sq("ALTER SYSTEM SET pg_sop.resolver_naptime = 1; SELECT pg_reload_conf();");
	ok($node->poll_query_until('postgres', 'SELECT count(*) = 0 FROM pg_sop_in_doubt'),
		'the resolver worker decided the in-doubt commit');
	is(sq("SELECT count(*) FROM f_local WHERE id = $id"), '1', 'worker: foreign row committed');
	sq("ALTER SYSTEM SET pg_sop.resolver_naptime = 0; SELECT pg_reload_conf();");
}

# max_prepared_transactions = 0: PREPARE refused, nothing left in the engine
{
	$node->append_conf('postgresql.conf', 'max_prepared_transactions = 0');
	$node->restart;
	my $id = $next_id++;
	my ($rc, $out, $err) = $node->psql('postgres',
		"BEGIN; " . write_sql('local', $id) . " PREPARE TRANSACTION 'nope';");
	like($err, qr/prepared transactions are disabled/, 'max_prepared_transactions = 0: refused');
	check_outcome('max_prepared_transactions = 0', 'local', $id, 0);
}

unlike(slurp_file($node->logfile), qr/PANIC/, 'no PANIC in the server log');
$node->stop;
done_testing();
