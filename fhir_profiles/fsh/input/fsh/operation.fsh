Instance: patientkontrakt
InstanceOf: OperationDefinition
Usage: #definition
Title: "$patientkontrakt"
Description: "Hela Patientkontraktet som en Bundle."
* url = "https://patientkontrakt.se/fhir/OperationDefinition/patientkontrakt"
* version = "0.1.0"
* name = "Patientkontrakt"
* title = "$patientkontrakt: hela Patientkontraktet"
* status = #draft
* experimental = false
* publisher = "Patientkontrakt"
* kind = #operation
* code = #patientkontrakt
* description = "Returns the whole Patientkontrakt as one Bundle: the active agreement (CarePlan) with its CareTeam, Goals, activities sorted by time (CarePlan.activity details and the Appointments they reference), and the referenced Practitioners, PractitionerRoles and Organizations. On Patient/[id] it is the patient's active agreement; on CarePlan/[id] it is that agreement. Both the patient e-service and the exchange with EHR systems use it."
* comment = "Svenska: hela Patientkontraktet som en Bundle: den gällande överenskommelsen med vårdteam, mål, aktiviteter i tidsordning och de medarbetaruppdrag, personer och enheter som den hänvisar till."
* affectsState = false
* resource[0] = #Patient
* resource[1] = #CarePlan
* system = false
* type = false
* instance = true
* parameter[0].name = #return
* parameter[0].use = #out
* parameter[0].min = 1
* parameter[0].max = "1"
* parameter[0].type = #Bundle
* parameter[0].documentation = "The active agreement with its CareTeam, Goals, activities sorted by time, and the referenced Practitioners, PractitionerRoles and Organizations."

Instance: export
InstanceOf: OperationDefinition
Usage: #definition
Title: "$export"
Description: "Bulkexport av allt klienten får läsa."
* url = "https://patientkontrakt.se/fhir/OperationDefinition/export"
* version = "0.1.0"
* name = "Export"
* title = "$export: bulkexport (Bulk Data Access IG 2.0)"
* status = #draft
* experimental = false
* publisher = "Patientkontrakt"
* kind = #operation
* code = #export
* base = "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/export"
* description = "The Bulk Data Access IG 2.0 system-level export, as this server supports it: asynchronous (Prefer: respond-async), for SMART Backend Services clients acting for a care unit; ndjson files of exactly what the client may read through search. Supported: _outputFormat, _since, _type. Not supported (400 unless Prefer: handling=lenient): _until, _elements, _typeFilter, includeAssociatedData, patient, organizeOutputBy, allowPartialManifests."
* comment = "Svenska: exporterar allt som klienten får läsa, som ndjson-filer."
* affectsState = false
* system = true
* type = false
* instance = false
* parameter[0].name = #_outputFormat
* parameter[0].use = #in
* parameter[0].min = 0
* parameter[0].max = "1"
* parameter[0].type = #string
* parameter[0].documentation = "application/fhir+ndjson (also application/ndjson, ndjson): the only format."
* parameter[1].name = #_since
* parameter[1].use = #in
* parameter[1].min = 0
* parameter[1].max = "1"
* parameter[1].type = #instant
* parameter[1].documentation = "Only resources changed after this instant."
* parameter[2].name = #_type
* parameter[2].use = #in
* parameter[2].min = 0
* parameter[2].max = "*"
* parameter[2].type = #string
* parameter[2].documentation = "Comma-separated resource types to export (default: every type the client may search)."

Instance: patient-export
InstanceOf: OperationDefinition
Usage: #definition
Title: "Patient/$export"
Description: "Bulkexport av patienternas journaler som klienten får läsa."
* url = "https://patientkontrakt.se/fhir/OperationDefinition/patient-export"
* version = "0.1.0"
* name = "PatientExport"
* title = "Patient/$export: bulkexport av patientdata (Bulk Data Access IG 2.0)"
* status = #draft
* experimental = false
* publisher = "Patientkontrakt"
* kind = #operation
* code = #export
* base = "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/patient-export"
* description = "The Bulk Data Access IG 2.0 Patient-level export, as this server supports it: the resources of patient compartments the client may read through search (no directory resources), as ndjson. Supported: _outputFormat, _since, _type, patient. Not supported (400 unless Prefer: handling=lenient): _until, _elements, _typeFilter, includeAssociatedData, organizeOutputBy, allowPartialManifests."
* comment = "Svenska: exporterar patienternas uppgifter som klienten får läsa, som ndjson-filer."
* affectsState = false
* resource[0] = #Patient
* system = false
* type = true
* instance = false
* parameter[0].name = #_outputFormat
* parameter[0].use = #in
* parameter[0].min = 0
* parameter[0].max = "1"
* parameter[0].type = #string
* parameter[0].documentation = "application/fhir+ndjson (also application/ndjson, ndjson): the only format."
* parameter[1].name = #_since
* parameter[1].use = #in
* parameter[1].min = 0
* parameter[1].max = "1"
* parameter[1].type = #instant
* parameter[1].documentation = "Only resources changed after this instant."
* parameter[2].name = #_type
* parameter[2].use = #in
* parameter[2].min = 0
* parameter[2].max = "*"
* parameter[2].type = #string
* parameter[2].documentation = "Comma-separated resource types of the patient compartment to export (default: every such type the client may search)."
* parameter[3].name = #patient
* parameter[3].use = #in
* parameter[3].min = 0
* parameter[3].max = "*"
* parameter[3].type = #Reference
* parameter[3].documentation = "Only these patients (POST)."

Instance: group-export
InstanceOf: OperationDefinition
Usage: #definition
Title: "Group/[id]/$export"
Description: "Bulkexport av uppgifterna om patienterna i en vårdenhets grupp."
* url = "https://patientkontrakt.se/fhir/OperationDefinition/group-export"
* version = "0.1.0"
* name = "GroupExport"
* title = "Group/[id]/$export: bulkexport av en grupps patienter (Bulk Data Access IG 2.0)"
* status = #draft
* experimental = false
* publisher = "Patientkontrakt"
* kind = #operation
* code = #export
* base = "http://hl7.org/fhir/uv/bulkdata/OperationDefinition/group-export"
* description = "The Bulk Data Access IG 2.0 Group-level export, as this server supports it: for a Group the client may read (a care unit's own list of patients), the resources of its members' patient compartments that the client may read through search, as ndjson. The members are those of the Group at the kick-off (not inactive); only those whose Patient the client may still read when the export runs are exported. Supported: _outputFormat, _since, _type, patient. Not supported (400 unless Prefer: handling=lenient): _until, _elements, _typeFilter, includeAssociatedData, organizeOutputBy, allowPartialManifests."
* comment = "Svenska: exporterar uppgifterna om gruppens patienter som klienten får läsa, som ndjson-filer."
* affectsState = false
* resource[0] = #Group
* system = false
* type = false
* instance = true
* parameter[0].name = #_outputFormat
* parameter[0].use = #in
* parameter[0].min = 0
* parameter[0].max = "1"
* parameter[0].type = #string
* parameter[0].documentation = "application/fhir+ndjson (also application/ndjson, ndjson): the only format."
* parameter[1].name = #_since
* parameter[1].use = #in
* parameter[1].min = 0
* parameter[1].max = "1"
* parameter[1].type = #instant
* parameter[1].documentation = "Only resources changed after this instant."
* parameter[2].name = #_type
* parameter[2].use = #in
* parameter[2].min = 0
* parameter[2].max = "*"
* parameter[2].type = #string
* parameter[2].documentation = "Comma-separated resource types of the patient compartment to export (default: every such type the client may search)."
* parameter[3].name = #patient
* parameter[3].use = #in
* parameter[3].min = 0
* parameter[3].max = "*"
* parameter[3].type = #Reference
* parameter[3].documentation = "Only these of the group's members (POST)."
