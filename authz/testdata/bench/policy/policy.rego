# A 50-rule who-may-call-whom policy for benchmarks (generated; see
# hack/bench/authz/run.sh). Rule i lets svc<i> call svc<i+1> with one method
# under /api/v1/svc<i+1>/. The same file is loaded by Sigil and by
# opa-envoy-plugin.
package envoy.authz

default allow := false

allow if {
	input.attributes.source.principal == "spiffe://example.org/ns/team0/sa/svc00"
	input.attributes.destination.principal == "spiffe://example.org/ns/team1/sa/svc01"
	input.attributes.request.http.method == "GET"
	startswith(input.attributes.request.http.path, "/api/v1/svc01/")
}

allow if {
	input.attributes.source.principal == "spiffe://example.org/ns/team1/sa/svc01"
	input.attributes.destination.principal == "spiffe://example.org/ns/team2/sa/svc02"
	input.attributes.request.http.method == "POST"
	startswith(input.attributes.request.http.path, "/api/v1/svc02/")
}

allow if {
	input.attributes.source.principal == "spiffe://example.org/ns/team2/sa/svc02"
	input.attributes.destination.principal == "spiffe://example.org/ns/team3/sa/svc03"
	input.attributes.request.http.method == "PUT"
	startswith(input.attributes.request.http.path, "/api/v1/svc03/")
}

allow if {
	input.attributes.source.principal == "spiffe://example.org/ns/team3/sa/svc03"
	input.attributes.destination.principal == "spiffe://example.org/ns/team4/sa/svc04"
	input.attributes.request.http.method == "GET"
	startswith(input.attributes.request.http.path, "/api/v1/svc04/")
}

allow if {
	input.attributes.source.principal == "spiffe://example.org/ns/team4/sa/svc04"
	input.attributes.destination.principal == "spiffe://example.org/ns/team5/sa/svc05"
	input.attributes.request.http.method == "DELETE"
	startswith(input.attributes.request.http.path, "/api/v1/svc05/")
}

allow if {
	input.attributes.source.principal == "spiffe://example.org/ns/team5/sa/svc05"
	input.attributes.destination.principal == "spiffe://example.org/ns/team6/sa/svc06"
	input.attributes.request.http.method == "GET"
	startswith(input.attributes.request.http.path, "/api/v1/svc06/")
}

allow if {
	input.attributes.source.principal == "spiffe://example.org/ns/team6/sa/svc06"
	input.attributes.destination.principal == "spiffe://example.org/ns/team7/sa/svc07"
	input.attributes.request.http.method == "POST"
	startswith(input.attributes.request.http.path, "/api/v1/svc07/")
}

allow if {
	input.attributes.source.principal == "spiffe://example.org/ns/team7/sa/svc07"
	input.attributes.destination.principal == "spiffe://example.org/ns/team8/sa/svc08"
	input.attributes.request.http.method == "PUT"
	startswith(input.attributes.request.http.path, "/api/v1/svc08/")
}

allow if {
	input.attributes.source.principal == "spiffe://example.org/ns/team8/sa/svc08"
	input.attributes.destination.principal == "spiffe://example.org/ns/team9/sa/svc09"
	input.attributes.request.http.method == "GET"
	startswith(input.attributes.request.http.path, "/api/v1/svc09/")
}

allow if {
	input.attributes.source.principal == "spiffe://example.org/ns/team9/sa/svc09"
	input.attributes.destination.principal == "spiffe://example.org/ns/team0/sa/svc10"
	input.attributes.request.http.method == "DELETE"
	startswith(input.attributes.request.http.path, "/api/v1/svc10/")
}

allow if {
	input.attributes.source.principal == "spiffe://example.org/ns/team0/sa/svc10"
	input.attributes.destination.principal == "spiffe://example.org/ns/team1/sa/svc11"
	input.attributes.request.http.method == "GET"
	startswith(input.attributes.request.http.path, "/api/v1/svc11/")
}

allow if {
	input.attributes.source.principal == "spiffe://example.org/ns/team1/sa/svc11"
	input.attributes.destination.principal == "spiffe://example.org/ns/team2/sa/svc12"
	input.attributes.request.http.method == "POST"
	startswith(input.attributes.request.http.path, "/api/v1/svc12/")
}

allow if {
	input.attributes.source.principal == "spiffe://example.org/ns/team2/sa/svc12"
	input.attributes.destination.principal == "spiffe://example.org/ns/team3/sa/svc13"
	input.attributes.request.http.method == "PUT"
	startswith(input.attributes.request.http.path, "/api/v1/svc13/")
}

allow if {
	input.attributes.source.principal == "spiffe://example.org/ns/team3/sa/svc13"
	input.attributes.destination.principal == "spiffe://example.org/ns/team4/sa/svc14"
	input.attributes.request.http.method == "GET"
	startswith(input.attributes.request.http.path, "/api/v1/svc14/")
}

allow if {
	input.attributes.source.principal == "spiffe://example.org/ns/team4/sa/svc14"
	input.attributes.destination.principal == "spiffe://example.org/ns/team5/sa/svc15"
	input.attributes.request.http.method == "DELETE"
	startswith(input.attributes.request.http.path, "/api/v1/svc15/")
}

allow if {
	input.attributes.source.principal == "spiffe://example.org/ns/team5/sa/svc15"
	input.attributes.destination.principal == "spiffe://example.org/ns/team6/sa/svc16"
	input.attributes.request.http.method == "GET"
	startswith(input.attributes.request.http.path, "/api/v1/svc16/")
}

allow if {
	input.attributes.source.principal == "spiffe://example.org/ns/team6/sa/svc16"
	input.attributes.destination.principal == "spiffe://example.org/ns/team7/sa/svc17"
	input.attributes.request.http.method == "POST"
	startswith(input.attributes.request.http.path, "/api/v1/svc17/")
}

allow if {
	input.attributes.source.principal == "spiffe://example.org/ns/team7/sa/svc17"
	input.attributes.destination.principal == "spiffe://example.org/ns/team8/sa/svc18"
	input.attributes.request.http.method == "PUT"
	startswith(input.attributes.request.http.path, "/api/v1/svc18/")
}

allow if {
	input.attributes.source.principal == "spiffe://example.org/ns/team8/sa/svc18"
	input.attributes.destination.principal == "spiffe://example.org/ns/team9/sa/svc19"
	input.attributes.request.http.method == "GET"
	startswith(input.attributes.request.http.path, "/api/v1/svc19/")
}

allow if {
	input.attributes.source.principal == "spiffe://example.org/ns/team9/sa/svc19"
	input.attributes.destination.principal == "spiffe://example.org/ns/team0/sa/svc20"
	input.attributes.request.http.method == "DELETE"
	startswith(input.attributes.request.http.path, "/api/v1/svc20/")
}

allow if {
	input.attributes.source.principal == "spiffe://example.org/ns/team0/sa/svc20"
	input.attributes.destination.principal == "spiffe://example.org/ns/team1/sa/svc21"
	input.attributes.request.http.method == "GET"
	startswith(input.attributes.request.http.path, "/api/v1/svc21/")
}

allow if {
	input.attributes.source.principal == "spiffe://example.org/ns/team1/sa/svc21"
	input.attributes.destination.principal == "spiffe://example.org/ns/team2/sa/svc22"
	input.attributes.request.http.method == "POST"
	startswith(input.attributes.request.http.path, "/api/v1/svc22/")
}

allow if {
	input.attributes.source.principal == "spiffe://example.org/ns/team2/sa/svc22"
	input.attributes.destination.principal == "spiffe://example.org/ns/team3/sa/svc23"
	input.attributes.request.http.method == "PUT"
	startswith(input.attributes.request.http.path, "/api/v1/svc23/")
}

allow if {
	input.attributes.source.principal == "spiffe://example.org/ns/team3/sa/svc23"
	input.attributes.destination.principal == "spiffe://example.org/ns/team4/sa/svc24"
	input.attributes.request.http.method == "GET"
	startswith(input.attributes.request.http.path, "/api/v1/svc24/")
}

allow if {
	input.attributes.source.principal == "spiffe://example.org/ns/team4/sa/svc24"
	input.attributes.destination.principal == "spiffe://example.org/ns/team5/sa/svc25"
	input.attributes.request.http.method == "DELETE"
	startswith(input.attributes.request.http.path, "/api/v1/svc25/")
}

allow if {
	input.attributes.source.principal == "spiffe://example.org/ns/team5/sa/svc25"
	input.attributes.destination.principal == "spiffe://example.org/ns/team6/sa/svc26"
	input.attributes.request.http.method == "GET"
	startswith(input.attributes.request.http.path, "/api/v1/svc26/")
}

allow if {
	input.attributes.source.principal == "spiffe://example.org/ns/team6/sa/svc26"
	input.attributes.destination.principal == "spiffe://example.org/ns/team7/sa/svc27"
	input.attributes.request.http.method == "POST"
	startswith(input.attributes.request.http.path, "/api/v1/svc27/")
}

allow if {
	input.attributes.source.principal == "spiffe://example.org/ns/team7/sa/svc27"
	input.attributes.destination.principal == "spiffe://example.org/ns/team8/sa/svc28"
	input.attributes.request.http.method == "PUT"
	startswith(input.attributes.request.http.path, "/api/v1/svc28/")
}

allow if {
	input.attributes.source.principal == "spiffe://example.org/ns/team8/sa/svc28"
	input.attributes.destination.principal == "spiffe://example.org/ns/team9/sa/svc29"
	input.attributes.request.http.method == "GET"
	startswith(input.attributes.request.http.path, "/api/v1/svc29/")
}

allow if {
	input.attributes.source.principal == "spiffe://example.org/ns/team9/sa/svc29"
	input.attributes.destination.principal == "spiffe://example.org/ns/team0/sa/svc30"
	input.attributes.request.http.method == "DELETE"
	startswith(input.attributes.request.http.path, "/api/v1/svc30/")
}

allow if {
	input.attributes.source.principal == "spiffe://example.org/ns/team0/sa/svc30"
	input.attributes.destination.principal == "spiffe://example.org/ns/team1/sa/svc31"
	input.attributes.request.http.method == "GET"
	startswith(input.attributes.request.http.path, "/api/v1/svc31/")
}

allow if {
	input.attributes.source.principal == "spiffe://example.org/ns/team1/sa/svc31"
	input.attributes.destination.principal == "spiffe://example.org/ns/team2/sa/svc32"
	input.attributes.request.http.method == "POST"
	startswith(input.attributes.request.http.path, "/api/v1/svc32/")
}

allow if {
	input.attributes.source.principal == "spiffe://example.org/ns/team2/sa/svc32"
	input.attributes.destination.principal == "spiffe://example.org/ns/team3/sa/svc33"
	input.attributes.request.http.method == "PUT"
	startswith(input.attributes.request.http.path, "/api/v1/svc33/")
}

allow if {
	input.attributes.source.principal == "spiffe://example.org/ns/team3/sa/svc33"
	input.attributes.destination.principal == "spiffe://example.org/ns/team4/sa/svc34"
	input.attributes.request.http.method == "GET"
	startswith(input.attributes.request.http.path, "/api/v1/svc34/")
}

allow if {
	input.attributes.source.principal == "spiffe://example.org/ns/team4/sa/svc34"
	input.attributes.destination.principal == "spiffe://example.org/ns/team5/sa/svc35"
	input.attributes.request.http.method == "DELETE"
	startswith(input.attributes.request.http.path, "/api/v1/svc35/")
}

allow if {
	input.attributes.source.principal == "spiffe://example.org/ns/team5/sa/svc35"
	input.attributes.destination.principal == "spiffe://example.org/ns/team6/sa/svc36"
	input.attributes.request.http.method == "GET"
	startswith(input.attributes.request.http.path, "/api/v1/svc36/")
}

allow if {
	input.attributes.source.principal == "spiffe://example.org/ns/team6/sa/svc36"
	input.attributes.destination.principal == "spiffe://example.org/ns/team7/sa/svc37"
	input.attributes.request.http.method == "POST"
	startswith(input.attributes.request.http.path, "/api/v1/svc37/")
}

allow if {
	input.attributes.source.principal == "spiffe://example.org/ns/team7/sa/svc37"
	input.attributes.destination.principal == "spiffe://example.org/ns/team8/sa/svc38"
	input.attributes.request.http.method == "PUT"
	startswith(input.attributes.request.http.path, "/api/v1/svc38/")
}

allow if {
	input.attributes.source.principal == "spiffe://example.org/ns/team8/sa/svc38"
	input.attributes.destination.principal == "spiffe://example.org/ns/team9/sa/svc39"
	input.attributes.request.http.method == "GET"
	startswith(input.attributes.request.http.path, "/api/v1/svc39/")
}

allow if {
	input.attributes.source.principal == "spiffe://example.org/ns/team9/sa/svc39"
	input.attributes.destination.principal == "spiffe://example.org/ns/team0/sa/svc40"
	input.attributes.request.http.method == "DELETE"
	startswith(input.attributes.request.http.path, "/api/v1/svc40/")
}

allow if {
	input.attributes.source.principal == "spiffe://example.org/ns/team0/sa/svc40"
	input.attributes.destination.principal == "spiffe://example.org/ns/team1/sa/svc41"
	input.attributes.request.http.method == "GET"
	startswith(input.attributes.request.http.path, "/api/v1/svc41/")
}

allow if {
	input.attributes.source.principal == "spiffe://example.org/ns/team1/sa/svc41"
	input.attributes.destination.principal == "spiffe://example.org/ns/team2/sa/svc42"
	input.attributes.request.http.method == "POST"
	startswith(input.attributes.request.http.path, "/api/v1/svc42/")
}

allow if {
	input.attributes.source.principal == "spiffe://example.org/ns/team2/sa/svc42"
	input.attributes.destination.principal == "spiffe://example.org/ns/team3/sa/svc43"
	input.attributes.request.http.method == "PUT"
	startswith(input.attributes.request.http.path, "/api/v1/svc43/")
}

allow if {
	input.attributes.source.principal == "spiffe://example.org/ns/team3/sa/svc43"
	input.attributes.destination.principal == "spiffe://example.org/ns/team4/sa/svc44"
	input.attributes.request.http.method == "GET"
	startswith(input.attributes.request.http.path, "/api/v1/svc44/")
}

allow if {
	input.attributes.source.principal == "spiffe://example.org/ns/team4/sa/svc44"
	input.attributes.destination.principal == "spiffe://example.org/ns/team5/sa/svc45"
	input.attributes.request.http.method == "DELETE"
	startswith(input.attributes.request.http.path, "/api/v1/svc45/")
}

allow if {
	input.attributes.source.principal == "spiffe://example.org/ns/team5/sa/svc45"
	input.attributes.destination.principal == "spiffe://example.org/ns/team6/sa/svc46"
	input.attributes.request.http.method == "GET"
	startswith(input.attributes.request.http.path, "/api/v1/svc46/")
}

allow if {
	input.attributes.source.principal == "spiffe://example.org/ns/team6/sa/svc46"
	input.attributes.destination.principal == "spiffe://example.org/ns/team7/sa/svc47"
	input.attributes.request.http.method == "POST"
	startswith(input.attributes.request.http.path, "/api/v1/svc47/")
}

allow if {
	input.attributes.source.principal == "spiffe://example.org/ns/team7/sa/svc47"
	input.attributes.destination.principal == "spiffe://example.org/ns/team8/sa/svc48"
	input.attributes.request.http.method == "PUT"
	startswith(input.attributes.request.http.path, "/api/v1/svc48/")
}

allow if {
	input.attributes.source.principal == "spiffe://example.org/ns/team8/sa/svc48"
	input.attributes.destination.principal == "spiffe://example.org/ns/team9/sa/svc49"
	input.attributes.request.http.method == "GET"
	startswith(input.attributes.request.http.path, "/api/v1/svc49/")
}

allow if {
	input.attributes.source.principal == "spiffe://example.org/ns/team9/sa/svc49"
	input.attributes.destination.principal == "spiffe://example.org/ns/team0/sa/svc00"
	input.attributes.request.http.method == "DELETE"
	startswith(input.attributes.request.http.path, "/api/v1/svc00/")
}
