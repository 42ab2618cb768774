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
