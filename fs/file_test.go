package fs

import (
	"go/ast"
	"go/parser"
	"go/token"
	"reflect"
	"slices"
	"testing"

	gofs "github.com/hanwen/go-fuse/v2/fs"
)

// TestFileInheritsNoModification: File embeds go-fuse's LoopbackFile,
// whose methods act on the backing fd with no intent. Every method that
// LoopbackFile has must be either declared on File (which records first,
// or refuses) or one that cannot change BACKING. A go-fuse upgrade that
// adds a method to LoopbackFile fails here until someone decides which
// it is.
func TestFileInheritsNoModification(t *testing.T) {
	// Methods that only read, or lock (a lock changes no content),
	// and may be inherited as they are.
	readOnly := []string{"Read", "Getattr", "Statx", "Lseek", "Getlk", "Setlk", "Setlkw", "Fsync"}
	declared := fileMethodsDeclared(t)
	for _, must := range []string{"Write", "Writev", "Allocate", "Setattr", "Ioctl", "Release", "Flush", "PassthroughFd"} {
		if !slices.Contains(declared, must) {
			t.Errorf("File does not declare %s: the inherited one would act on BACKING unchecked", must)
		}
	}
	lt := reflect.TypeOf((*gofs.LoopbackFile)(nil))
	for i := range lt.NumMethod() {
		m := lt.Method(i).Name
		if !slices.Contains(declared, m) && !slices.Contains(readOnly, m) {
			t.Errorf("File inherits LoopbackFile.%s, which is neither declared on File nor known to leave BACKING unchanged", m)
		}
	}
}

// fileMethodsDeclared is the methods declared on *File in this package's
// source.
func fileMethodsDeclared(t *testing.T) []string {
	t.Helper()
	pkgs, err := parser.ParseDir(token.NewFileSet(), ".", nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, p := range pkgs {
		for _, f := range p.Files {
			for _, d := range f.Decls {
				fd, ok := d.(*ast.FuncDecl)
				if !ok || fd.Recv == nil || len(fd.Recv.List) != 1 {
					continue
				}
				if star, ok := fd.Recv.List[0].Type.(*ast.StarExpr); ok {
					if id, ok := star.X.(*ast.Ident); ok && id.Name == "File" {
						names = append(names, fd.Name.Name)
					}
				}
			}
		}
	}
	return names
}
