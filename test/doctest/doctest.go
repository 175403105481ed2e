// Package doctest reads the Markdown tables that the documentation tests
// hold against the code (flag tables, config fields, metric names).
package doctest

import "strings"

// Table returns the rows of the first Markdown table in doc whose header
// row starts with header, each as its trimmed cells, without the header and
// separator rows; nil when there is no such table.
func Table(doc, header string) [][]string {
	var rows [][]string
	in := false
	for _, line := range strings.Split(doc, "\n") {
		if !in {
			in = strings.HasPrefix(line, header)
			continue
		}
		if !strings.HasPrefix(line, "|") {
			break
		}
		cells := strings.Split(strings.Trim(line, "|"), "|")
		for i := range cells {
			cells[i] = strings.TrimSpace(cells[i])
		}
		if strings.HasPrefix(cells[0], "---") {
			continue
		}
		rows = append(rows, cells)
	}
	return rows
}

// Code returns the content of a cell that is one `code span`.
func Code(cell string) (string, bool) {
	c := strings.TrimSpace(cell)
	if len(c) < 2 || c[0] != '`' || c[len(c)-1] != '`' || strings.Count(c, "`") != 2 {
		return "", false
	}
	return c[1 : len(c)-1], true
}
