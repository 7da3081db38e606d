# bench/results.gp - the charts of docs/bench/results.md (bench/run.sh runs
# it with N set): median ops/s per workload and engine, log scale; and the
# PostgreSQL tests, heap against pg_sop.
set terminal pngcairo size 1400,640 font "DejaVu Sans,10"
set datafile missing '?'
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.9 border -1
set grid ytics
set key outside right top noenhanced

set output 'docs/bench/results.png'
set title sprintf("libsop vs LMDB / SQLite / RocksDB: median operations per second, N = %s (log scale)", N)
set logscale y
set format y "10^{%L}"
set ylabel "operations per second"
plot for [c=2:9] 'docs/bench/results.dat' using c:xtic(1) title columnheader(c)

set output 'docs/bench/results_pg.png'
set terminal pngcairo size 900,500 font "DejaVu Sans,10"
set title sprintf("PostgreSQL: heap table vs pg\\_sop foreign table, rows/s, N = %s", N)
unset logscale y
set format y "%.0f"
set ylabel "rows per second"
plot for [c=2:3] 'docs/bench/results_pg.dat' using c:xtic(1) title columnheader(c)
