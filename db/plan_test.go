package db_test

import (
	"context"
	"encoding/json"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"

	"github.com/pgpush/pgpush/db/dbtest"
)

func TestMain(m *testing.M) {
	dbtest.Main(m)
}

// bigTableRows is the size of the table the plans are checked against
// besides an empty one: a deployment with history.
const bigTableRows = 1_000_000

// smallTableRows is the size at which autovacuum first analyzes the table of
// a new deployment (50 rows plus 10% of the table changed, seen within a
// minute): the plans then made are kept by pgpush's sessions while the table
// grows by a minute's inserts or more, until the next ANALYZE.
const smallTableRows = 300

// TestPlansUseIndexes EXPLAINs every query sqlc generates, as pgpush's
// sessions plan them (plan_cache_mode=force_generic_plan, enable_seqscan=off
// and jit=off, set in cmd/pgpush/db.go: one generic plan per session, kept
// until the table's statistics change), on a just-migrated table that was
// never analyzed (the first minutes of a deployment), after autovacuum's
// first ANALYZE of it at a few hundred rows (the plans then made serve until
// the next one, however much the table grows meanwhile), on a table of a
// million rows never analyzed (the planner guesses from its size alone) and
// after its ANALYZE. It fails on a sequential scan of a pgpush table (with
// sequential scans off, one means the query has no index it can use) or a
// nested loop that filters each outer row against an unindexed inner set:
// both grow with the table (or the batch) on every call.
//
// New queries are covered as they are added: the test reads the generated
// constants (`-- name: X` and the SQL, with $n parameters) from this
// package's source, PREPAREs each, and EXPLAINs its EXECUTE with a dummy
// value per parameter type (PostgreSQL 15 has no EXPLAIN (GENERIC_PLAN); with
// force_generic_plan the values do not change the plan). Nothing is
// executed, and every EXPLAIN runs in a transaction that is rolled back.
func TestPlansUseIndexes(t *testing.T) {
	t.Parallel()
	queries := generatedQueries(t)
	if len(queries) == 0 {
		t.Fatal("no generated queries found")
	}
	check := func(state string, conn *pgx.Conn) {
		tables := pgpushTables(t, conn)
		// One-row tables (a CHECK constraint keeps them so).
		tables = slices.DeleteFunc(tables, func(s string) bool {
			return s == "notifications_deleted_horizon" || s == "notifications_unread_folded" || s == "notifications_hint_key"
		})
		for _, q := range queries {
			t.Run(q.name+"/"+state, func(t *testing.T) {
				plan := explain(t, conn, q)
				for _, p := range hazards(plan, tables) {
					t.Errorf("%s on a table %s: %s\n%s", q.name, state, p, renderPlan(plan))
				}
			})
		}
	}
	check("empty, never analyzed", planConn(t, dbtest.NewDB(t)))
	small := dbtest.NewDB(t)
	analyzeSmall(t, small)
	check(fmt.Sprintf("analyzed at %d rows", smallTableRows), planConn(t, small))
	big := dbtest.NewDB(t)
	fillTable(t, big)
	// Each state gets a session of its own, as a cached generic plan is
	// per session.
	check(fmt.Sprintf("of %d rows, never analyzed", bigTableRows), planConn(t, big))
	analyze(t, big)
	check(fmt.Sprintf("of %d rows, analyzed", bigTableRows), planConn(t, big))
}

// query is one generated query.
type query struct {
	name string // as in `-- name: X`
	sql  string
}

// generatedQueries reads the string constants of this package's sqlc
// output whose text starts with "-- name: ".
func generatedQueries(t *testing.T) []query {
	t.Helper()
	files, err := filepath.Glob("*.sql.go")
	if err != nil || len(files) == 0 {
		t.Fatalf("no *.sql.go files: %v", err)
	}
	var out []query
	fset := token.NewFileSet()
	for _, f := range files {
		file, err := parser.ParseFile(fset, f, nil, parser.SkipObjectResolution)
		if err != nil {
			t.Fatal(err)
		}
		ast.Inspect(file, func(n ast.Node) bool {
			lit, ok := n.(*ast.BasicLit)
			if !ok || lit.Kind != token.STRING {
				return true
			}
			s, err := strconv.Unquote(lit.Value)
			if err != nil {
				return true
			}
			header, _, _ := strings.Cut(s, "\n")
			name, ok := strings.CutPrefix(header, "-- name: ")
			if !ok {
				return true
			}
			name, _, _ = strings.Cut(name, " ")
			out = append(out, query{name: name, sql: s})
			return true
		})
	}
	slices.SortFunc(out, func(a, b query) int { return strings.Compare(a.name, b.name) })
	return out
}

// fillTable fills the notifications table of the database at url with
// bigTableRows rows: 10,000 users of 100 rows each, half of them unread. The
// rows go in one user after another, so that every index grows at its right
// edge and the load takes seconds; the triggers are off for it (they would
// only send hints nobody hears). Autovacuum is turned off for the table, so
// that it stays never analyzed until analyze.
func fillTable(t *testing.T, url string) {
	t.Helper()
	conn := planConn(t, url)
	defer conn.Close(context.Background())
	err := pgx.BeginFunc(t.Context(), conn, func(tx pgx.Tx) error {
		if _, err := tx.Exec(t.Context(), "ALTER TABLE notifications SET (autovacuum_enabled = false)"); err != nil {
			return err
		}
		if _, err := tx.Exec(t.Context(), "SET LOCAL session_replication_role = replica"); err != nil {
			return err
		}
		_, err := tx.Exec(t.Context(), `
INSERT INTO notifications (user_id, kind, title, body, created_at, read_at)
SELECT 'user-' || lpad((g / 100)::text, 6, '0'), 'test', 'row ' || g, 'body of row ' || g,
       now() - (($1 - g) || ' seconds')::interval,
       CASE WHEN g % 2 = 0 THEN now() END
FROM generate_series(0, $1 - 1) AS g`, bigTableRows)
		if err != nil {
			return err
		}
		// The unread counts as the migration takes them, and a ledger of
		// ten changes per user not folded yet (pgpush was down a while).
		_, err = tx.Exec(t.Context(), `
INSERT INTO notifications_unread (user_id, unread)
SELECT user_id, count(*) FROM notifications WHERE read_at IS NULL GROUP BY user_id`)
		if err != nil {
			return err
		}
		for _, table := range []string{"notifications_unread", "notifications_unread_delta"} {
			if _, err := tx.Exec(t.Context(), "ALTER TABLE "+table+" SET (autovacuum_enabled = false)"); err != nil {
				return err
			}
		}
		_, err = tx.Exec(t.Context(), `
INSERT INTO notifications_unread_delta (user_id, delta)
SELECT 'user-' || lpad((g % ($1 / 100))::text, 6, '0'), 1
FROM generate_series(0, $1 / 10 - 1) AS g`, bigTableRows)
		if err != nil {
			return err
		}
		// And months of deletions: a statement a day deleting 3 rows of
		// each user.
		if _, err := tx.Exec(t.Context(), "ALTER TABLE notifications_deleted SET (autovacuum_enabled = false)"); err != nil {
			return err
		}
		_, err = tx.Exec(t.Context(), `
INSERT INTO notifications_deleted (user_id, ids, deleted_at)
SELECT 'user-' || lpad((g / 10)::text, 6, '0'), ARRAY[g, g + 1, g + 2]::bigint[], now() - ((g % 90) || ' days')::interval
FROM generate_series(0, $1 / 10 - 1) AS g`, bigTableRows)
		return err
	})
	if err != nil {
		t.Fatalf("fill the table: %v", err)
	}
}

// analyzeSmall inserts smallTableRows rows of as many users into the table
// at url, and analyzes it.
func analyzeSmall(t *testing.T, url string) {
	t.Helper()
	conn := planConn(t, url)
	defer conn.Close(context.Background())
	_, err := conn.Exec(t.Context(), `
INSERT INTO notifications (user_id, kind, title, body)
SELECT 'user-' || lpad(g::text, 6, '0'), 'test', 'row ' || g, repeat('b', 200)
FROM generate_series(0, $1 - 1) AS g`, smallTableRows)
	if err != nil {
		t.Fatalf("fill the table: %v", err)
	}
	if _, err := conn.Exec(t.Context(), "ANALYZE notifications"); err != nil {
		t.Fatal(err)
	}
}

// analyze vacuums and analyzes pgpush's tables, as autovacuum does.
func analyze(t *testing.T, url string) {
	t.Helper()
	conn := planConn(t, url)
	defer conn.Close(context.Background())
	for _, table := range pgpushTables(t, conn) {
		if _, err := conn.Exec(t.Context(), "VACUUM (ANALYZE) "+pgx.Identifier{table}.Sanitize()); err != nil {
			t.Fatalf("vacuum %s: %v", table, err)
		}
	}
}

// planConn connects to url with the planner settings of pgpush's sessions.
func planConn(t *testing.T, url string) *pgx.Conn {
	t.Helper()
	cfg, err := pgx.ParseConfig(url)
	if err != nil {
		t.Fatal(err)
	}
	// As cmd/pgpush/db.go sets it.
	cfg.RuntimeParams["plan_cache_mode"] = "force_generic_plan"
	cfg.RuntimeParams["enable_seqscan"] = "off"
	cfg.RuntimeParams["jit"] = "off"
	conn, err := pgx.ConnectConfig(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close(context.Background()) })
	return conn
}

// pgpushTables lists the tables in pgpush's schema, but goose's.
func pgpushTables(t *testing.T, conn *pgx.Conn) []string {
	t.Helper()
	rows, err := conn.Query(t.Context(), `
SELECT c.relname FROM pg_class c
WHERE c.relnamespace = current_schema()::regnamespace AND c.relkind IN ('r', 'p')
  AND c.relname <> 'goose_db_version'
ORDER BY 1`)
	if err != nil {
		t.Fatal(err)
	}
	tables, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(tables, "notifications") {
		t.Fatalf("pgpush's tables %v do not include notifications", tables)
	}
	return tables
}

// dummyValues are literals of the parameter types the queries use. A query
// with a parameter of another type fails the test until one is added here.
var dummyValues = map[string]string{
	"text":                     "'user-000001'",
	"character varying":        "'user-000001'",
	"bigint":                   "1",
	"integer":                  "1",
	"smallint":                 "1",
	"boolean":                  "true",
	"jsonb":                    `'{}'`,
	"json":                     `'{}'`,
	"timestamp with time zone": "now()",
	"xid8":                     "'1'",
	"double precision":         "604800",
	"text[]":                   "'{user-000001,user-000002}'",
	"bigint[]":                 "'{1,2}'",
	"integer[]":                "'{1,2}'",
}

// explain returns the generic plan of q, as EXPLAIN (FORMAT JSON) gives it.
func explain(t *testing.T, conn *pgx.Conn, q query) planNode {
	t.Helper()
	ctx := t.Context()
	tx, err := conn.Begin(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(context.Background())
	stmt := "plan_" + strings.ToLower(q.name)
	desc, err := tx.Prepare(ctx, stmt, q.sql)
	if err != nil {
		t.Fatalf("prepare: %v", err)
	}
	defer conn.Deallocate(context.Background(), stmt)
	args := make([]string, len(desc.ParamOIDs))
	for i, oid := range desc.ParamOIDs {
		var typ string
		if err := tx.QueryRow(ctx, "SELECT format_type($1, NULL)", oid).Scan(&typ); err != nil {
			t.Fatal(err)
		}
		v, ok := dummyValues[typ]
		if !ok {
			t.Fatalf("parameter $%d is of type %s, which dummyValues lacks: add a literal of it", i+1, typ)
		}
		args[i] = v + "::" + typ
	}
	sql := "EXPLAIN (FORMAT JSON) EXECUTE " + stmt
	if len(args) > 0 {
		sql += "(" + strings.Join(args, ", ") + ")"
	}
	var out []struct {
		Plan planNode `json:"Plan"`
	}
	var raw string
	if err := tx.QueryRow(ctx, sql).Scan(&raw); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	if err := json.Unmarshal([]byte(raw), &out); err != nil || len(out) != 1 {
		t.Fatalf("EXPLAIN output %q: %v", raw, err)
	}
	return out[0].Plan
}

// planNode is one node of EXPLAIN (FORMAT JSON)'s plan.
type planNode struct {
	NodeType    string     `json:"Node Type"`
	Relation    string     `json:"Relation Name"`
	Alias       string     `json:"Alias"`
	Index       string     `json:"Index Name"`
	Parent      string     `json:"Parent Relationship"`
	SubplanName string     `json:"Subplan Name"`
	CTEName     string     `json:"CTE Name"`
	JoinFilter  string     `json:"Join Filter"`
	Filter      string     `json:"Filter"`
	IndexCond   string     `json:"Index Cond"`
	PlanRows    float64    `json:"Plan Rows"`
	TotalCost   float64    `json:"Total Cost"`
	Plans       []planNode `json:"Plans"`
}

// indexed reports whether n reads its rows through an index.
func (n *planNode) indexed() bool {
	switch n.NodeType {
	case "Index Scan", "Index Only Scan", "Bitmap Heap Scan":
		return true
	}
	return false
}

// hazards lists what in plan grows with a table or a batch on every call:
// a sequential scan of one of tables, and a nested loop that tests every
// pair of its outer and (unindexed) inner rows against a join filter.
func hazards(plan planNode, tables []string) []string {
	var out []string
	var walk func(n *planNode)
	walk = func(n *planNode) {
		if n.NodeType == "Seq Scan" && slices.Contains(tables, n.Relation) {
			out = append(out, fmt.Sprintf("Seq Scan on %s (alias %s) reads the whole table", n.Relation, n.Alias))
		}
		if n.NodeType == "Nested Loop" && n.JoinFilter != "" {
			for i := range n.Plans {
				inner := &n.Plans[i]
				if inner.Parent == "Inner" && !inner.indexed() {
					out = append(out, fmt.Sprintf("Nested Loop compares every outer row with every row of an unindexed %s (Join Filter: %s)",
						inner.NodeType, n.JoinFilter))
				}
			}
		}
		for i := range n.Plans {
			walk(&n.Plans[i])
		}
	}
	walk(&plan)
	return out
}

// renderPlan writes plan as an indented outline, for failure messages.
func renderPlan(plan planNode) string {
	var b strings.Builder
	var walk func(n *planNode, depth int)
	walk = func(n *planNode, depth int) {
		fmt.Fprintf(&b, "%s%s", strings.Repeat("  ", depth), n.NodeType)
		if n.Relation != "" {
			fmt.Fprintf(&b, " on %s %s", n.Relation, n.Alias)
		}
		if n.CTEName != "" {
			fmt.Fprintf(&b, " of %s", n.CTEName)
		}
		if n.Index != "" {
			fmt.Fprintf(&b, " using %s", n.Index)
		}
		if n.SubplanName != "" {
			fmt.Fprintf(&b, " [%s]", n.SubplanName)
		}
		fmt.Fprintf(&b, " (rows=%.0f cost=%.2f)", n.PlanRows, n.TotalCost)
		for _, c := range []struct{ k, v string }{{"Index Cond", n.IndexCond}, {"Filter", n.Filter}, {"Join Filter", n.JoinFilter}} {
			if c.v != "" {
				fmt.Fprintf(&b, "\n%s  %s: %s", strings.Repeat("  ", depth), c.k, c.v)
			}
		}
		b.WriteByte('\n')
		for i := range n.Plans {
			walk(&n.Plans[i], depth+1)
		}
	}
	walk(&plan, 1)
	return b.String()
}

// TestHazardsFindsTheKnownBadPlans checks the checker on plans PostgreSQL
// made for the batch fetch of migration 00005 (NotificationsByIDs, since
// replaced): a sequential scan under the count, and the
// count joined by a nested loop with a filter.
func TestHazardsFindsTheKnownBadPlans(t *testing.T) {
	t.Parallel()
	const plan = `{"Node Type": "Nested Loop", "Join Filter": "(c.user_id = n.user_id)", "Plans": [
	  {"Node Type": "Aggregate", "Parent Relationship": "InitPlan", "Subplan Name": "CTE c", "Plans": [
	    {"Node Type": "Seq Scan", "Parent Relationship": "Outer", "Relation Name": "notifications", "Alias": "x"}]},
	  {"Node Type": "Index Scan", "Parent Relationship": "Outer", "Relation Name": "notifications", "Alias": "n", "Index Name": "notifications_pkey"},
	  {"Node Type": "CTE Scan", "Parent Relationship": "Inner", "CTE Name": "c"}]}`
	var p planNode
	if err := json.Unmarshal([]byte(plan), &p); err != nil {
		t.Fatal(err)
	}
	got := hazards(p, []string{"notifications"})
	if len(got) != 2 || !strings.Contains(got[0], "Nested Loop") || !strings.Contains(got[1], "Seq Scan on notifications") {
		t.Errorf("hazards: %q; want the nested loop and the seq scan", got)
	}
	if got := hazards(p, []string{"other"}); len(got) != 1 {
		t.Errorf("hazards with notifications not pgpush's: %q; want only the nested loop", got)
	}
	p.JoinFilter = ""
	p.Plans[2] = planNode{NodeType: "Index Scan", Parent: "Inner", Relation: "notifications", Index: "notifications_pkey"}
	if got := hazards(p, []string{"other"}); len(got) != 0 {
		t.Errorf("hazards of an indexed nested loop: %q", got)
	}
}
